//! The group coordinator's requests: find, join, sync, heartbeat, leave, commit, fetch
//! offsets, describe and list groups, answered from [`crate::groups`].

use super::*;

impl Handler<'_> {
    pub(super) fn find_coordinator(&self, req: FindCoordinatorRequest) -> FindCoordinatorResponse {
        let mut r = FindCoordinatorResponse::default();
        let code = if req.key_type == 0 { 0 } else { E::CoordinatorNotAvailable.code() };
        let (host, port) = (s(&self.shared.advertised_host), i32::from(self.shared.advertised_port));
        if self.version >= 4 {
            r.coordinators = req
                .coordinator_keys
                .into_iter()
                .map(|key| {
                    let mut c = find_coordinator_response::Coordinator::default();
                    c.key = key;
                    c.node_id = BrokerId(if code == 0 { crate::NODE_ID } else { -1 });
                    c.host = host.clone();
                    c.port = port;
                    c.error_code = code;
                    c
                })
                .collect();
        } else {
            r.error_code = code;
            r.node_id = BrokerId(if code == 0 { crate::NODE_ID } else { -1 });
            r.host = host;
            r.port = port;
        }
        r
    }

    pub(super) async fn join_group(&self, req: JoinGroupRequest) -> JoinGroupResponse {
        let j = self
            .shared
            .groups
            .join(JoinRequest {
                group: req.group_id.0.to_string(),
                member_id: req.member_id.to_string(),
                instance_id: req.group_instance_id.map(|i| i.to_string()),
                client_id: self.client.clone(),
                client_host: format!("/{}", self.peer.rsplit_once(':').map_or(self.peer, |(h, _)| h)),
                // Version 0 has no rebalance timeout: it equals the session timeout.
                session_timeout_ms: req.session_timeout_ms,
                rebalance_timeout_ms: if self.version == 0 { req.session_timeout_ms } else { req.rebalance_timeout_ms },
                protocol_type: req.protocol_type.to_string(),
                protocols: req.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
            })
            .await;
        let mut r = JoinGroupResponse::default();
        r.error_code = j.error;
        r.generation_id = j.generation;
        r.protocol_type = j.protocol_type.map(|p| s(&p));
        r.protocol_name = Some(s(j.protocol.as_deref().unwrap_or("")));
        r.leader = s(&j.leader);
        r.member_id = s(&j.member_id);
        r.members = j
            .members
            .into_iter()
            .map(|(id, instance, meta)| {
                let mut m = JoinGroupResponseMember::default();
                m.member_id = s(&id);
                m.group_instance_id = instance.map(|i| s(&i));
                m.metadata = meta;
                m
            })
            .collect();
        r
    }

    pub(super) async fn sync_group(&self, req: SyncGroupRequest) -> SyncGroupResponse {
        let done = self
            .shared
            .groups
            .sync(
                req.group_id.0.as_str(),
                req.generation_id,
                req.member_id.as_str(),
                req.protocol_type.as_ref().map(|p| p.as_str()),
                req.protocol_name.as_ref().map(|p| p.as_str()),
                req.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
            )
            .await;
        let mut r = SyncGroupResponse::default();
        r.error_code = done.error;
        r.protocol_type = done.protocol_type.map(|p| s(&p));
        r.protocol_name = done.protocol.map(|p| s(&p));
        r.assignment = done.assignment;
        r
    }

    pub(super) fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let mut r = HeartbeatResponse::default();
        r.error_code = self.shared.groups.heartbeat(req.group_id.0.as_str(), req.generation_id, req.member_id.as_str());
        r
    }

    pub(super) fn leave_group(&self, req: LeaveGroupRequest) -> LeaveGroupResponse {
        let mut r = LeaveGroupResponse::default();
        let group = req.group_id.0.as_str();
        if self.version <= 2 {
            r.error_code = self.shared.groups.leave(group, &[req.member_id.to_string()])[0];
            return r;
        }
        let ids: Vec<String> = req.members.iter().map(|m| m.member_id.to_string()).collect();
        let codes = self.shared.groups.leave(group, &ids);
        r.members = req
            .members
            .into_iter()
            .zip(codes)
            .map(|(m, code)| {
                let mut mr = leave_group_response::MemberResponse::default();
                mr.member_id = m.member_id;
                mr.group_instance_id = m.group_instance_id;
                mr.error_code = code;
                mr
            })
            .collect();
        r
    }

    pub(super) fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let mut offsets = Vec::new();
        let mut unknown = std::collections::HashSet::new();
        for t in &req.topics {
            let topic = self.topic(t.name.0.as_str());
            for p in &t.partitions {
                if topic.as_ref().and_then(|x| x.partition(p.partition_index)).is_none() {
                    unknown.insert((t.name.0.to_string(), p.partition_index));
                    continue;
                }
                let c = Committed {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(ToString::to_string),
                };
                offsets.push(((t.name.0.to_string(), p.partition_index), c));
            }
        }
        let code = self.shared.commit(
            req.group_id.0.as_str(),
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            offsets,
        );
        let mut r = OffsetCommitResponse::default();
        for t in req.topics {
            let mut tr = OffsetCommitResponseTopic::default();
            for p in t.partitions {
                let mut pr = OffsetCommitResponsePartition::default();
                pr.partition_index = p.partition_index;
                pr.error_code = if unknown.contains(&(t.name.0.to_string(), p.partition_index)) {
                    E::UnknownTopicOrPartition.code()
                } else {
                    code
                };
                tr.partitions.push(pr);
            }
            tr.name = t.name;
            r.topics.push(tr);
        }
        r
    }

    pub(super) fn offset_fetch(&self, req: OffsetFetchRequest) -> OffsetFetchResponse {
        let mut r = OffsetFetchResponse::default();
        let found = |c: Option<Committed>| match c {
            Some(c) => (c.offset, c.leader_epoch, c.metadata),
            None => (-1, -1, Some(String::new())),
        };
        if self.version >= 8 {
            for g in req.groups {
                let wanted =
                    g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
                let mut gr = offset_fetch_response::OffsetFetchResponseGroup::default();
                for (topic, parts) in self.shared.groups.committed(g.group_id.0.as_str(), wanted) {
                    let mut tr = offset_fetch_response::OffsetFetchResponseTopics::default();
                    tr.name = TopicName(s(&topic));
                    for (p, c) in parts {
                        let (offset, epoch, meta) = found(c);
                        let mut pr = offset_fetch_response::OffsetFetchResponsePartitions::default();
                        pr.partition_index = p;
                        pr.committed_offset = offset;
                        pr.committed_leader_epoch = epoch;
                        pr.metadata = meta.map(|m| s(&m));
                        tr.partitions.push(pr);
                    }
                    gr.topics.push(tr);
                }
                gr.group_id = g.group_id;
                r.groups.push(gr);
            }
            return r;
        }
        let wanted = req.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
        for (topic, parts) in self.shared.groups.committed(req.group_id.0.as_str(), wanted) {
            let mut tr = OffsetFetchResponseTopic::default();
            tr.name = TopicName(s(&topic));
            for (p, c) in parts {
                let (offset, epoch, meta) = found(c);
                let mut pr = OffsetFetchResponsePartition::default();
                pr.partition_index = p;
                pr.committed_offset = offset;
                pr.committed_leader_epoch = epoch;
                pr.metadata = meta.map(|m| s(&m));
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        r
    }

    pub(super) fn describe_groups(&self, req: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let mut r = DescribeGroupsResponse::default();
        for id in req.groups {
            let mut g = DescribedGroup::default();
            match self.shared.groups.describe(id.0.as_str()) {
                None => g.group_state = s("Dead"),
                Some(d) => {
                    g.group_state = s(d.state);
                    g.protocol_type = s(&d.protocol_type);
                    g.protocol_data = s(&d.protocol);
                    g.members = d
                        .members
                        .into_iter()
                        .map(|(member, instance, client, host, meta, assignment)| {
                            let mut m = DescribedGroupMember::default();
                            m.member_id = s(&member);
                            m.group_instance_id = instance.map(|i| s(&i));
                            m.client_id = s(&client);
                            m.client_host = s(&host);
                            m.member_metadata = meta;
                            m.member_assignment = assignment;
                            m
                        })
                        .collect();
                }
            }
            g.group_id = id;
            r.groups.push(g);
        }
        r
    }

    pub(super) fn list_groups(&self, req: ListGroupsRequest) -> ListGroupsResponse {
        let mut r = ListGroupsResponse::default();
        let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
        r.groups = self
            .shared
            .groups
            .list()
            .into_iter()
            .filter(|(_, _, state)| states.is_empty() || states.contains(&state.to_lowercase()))
            .map(|(id, ptype, state)| {
                let mut g = ListedGroup::default();
                g.group_id = GroupId(s(&id));
                g.protocol_type = s(&ptype);
                g.group_state = s(state);
                g.group_type = s("classic");
                g
            })
            .collect();
        r
    }
}
