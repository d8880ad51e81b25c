//! Topic administration: create, delete, delete records, describe configs.

use super::*;

impl Handler<'_> {
    pub(super) fn create_topics(&self, req: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut r = CreateTopicsResponse::default();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut tr = CreatableTopicResult::default();
            tr.name = t.name.clone();
            tr.num_partitions = -1;
            tr.replication_factor = -1;
            let partitions = if !t.assignments.is_empty() {
                i32::try_from(t.assignments.len()).unwrap_or(i32::MAX)
            } else if t.num_partitions == -1 {
                self.shared.config.default_partitions
            } else {
                t.num_partitions
            };
            let configs: BTreeMap<String, String> =
                t.configs.iter().filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string()))).collect();
            let problem = if let Err(e) = valid_name(&name) {
                Some((E::InvalidTopicException.code(), e))
            } else if self.topic(&name).is_some() {
                Some((E::TopicAlreadyExists.code(), format!("Topic '{name}' already exists.")))
            } else if !(1..=crate::MAX_PARTITIONS).contains(&partitions) {
                Some((
                    E::InvalidPartitions.code(),
                    format!("{partitions} partitions: between 1 and {}", crate::MAX_PARTITIONS),
                ))
            } else if ![-1, 1].contains(&t.replication_factor) {
                let why = format!("Replication factor: {} larger than available brokers: 1.", t.replication_factor);
                Some((E::InvalidReplicationFactor.code(), why))
            } else if t.assignments.iter().any(|a| a.broker_ids.iter().any(|b| b.0 != crate::NODE_ID)) {
                Some((E::InvalidReplicaAssignment.code(), format!("the only broker is {}", crate::NODE_ID)))
            } else if let Err(e) = TopicConfig::parse(configs.clone(), &self.shared.config.defaults) {
                Some((E::InvalidConfig.code(), e))
            } else {
                None
            };
            match problem {
                Some((code, why)) => {
                    tr.error_code = code;
                    tr.error_message = Some(s(&why));
                }
                None if req.validate_only => {
                    tr.num_partitions = partitions;
                    tr.replication_factor = 1;
                }
                None => match self.shared.create_topic(&name, partitions, configs) {
                    Ok(topic) if self.version < 5 => tr.topic_id = topic.id,
                    Ok(topic) => {
                        tr.topic_id = topic.id;
                        tr.num_partitions = partitions;
                        tr.replication_factor = 1;
                        tr.configs = Some(
                            topic
                                .config
                                .describe(&self.shared.config.defaults)
                                .into_iter()
                                .map(|(k, v, default)| {
                                    let mut c = create_topics_response::CreatableTopicConfigs::default();
                                    c.name = s(&k);
                                    c.value = Some(s(&v));
                                    c.config_source = if default { 5 } else { 1 };
                                    c
                                })
                                .collect(),
                        );
                    }
                    Err((code, why)) => {
                        tr.error_code = code;
                        tr.error_message = Some(s(&why));
                    }
                },
            }
            r.topics.push(tr);
        }
        r
    }

    pub(super) fn delete_topics(&self, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let mut r = DeleteTopicsResponse::default();
        for name in req.topic_names {
            let mut tr = DeletableTopicResult::default();
            match self.shared.delete_topic(name.0.as_str()) {
                Some(id) => tr.topic_id = id,
                None => tr.error_code = E::UnknownTopicOrPartition.code(),
            }
            tr.name = Some(name);
            r.responses.push(tr);
        }
        r
    }

    pub(super) fn delete_records(&self, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let mut r = DeleteRecordsResponse::default();
        for t in req.topics {
            let topic = self.topic(t.name.0.as_str());
            let mut tr = DeleteRecordsTopicResult::default();
            tr.name = t.name;
            for p in t.partitions {
                let mut pr = DeleteRecordsPartitionResult::default();
                pr.partition_index = p.partition_index;
                pr.low_watermark = -1;
                match topic.as_ref().and_then(|x| x.partition(p.partition_index)) {
                    None => pr.error_code = E::UnknownTopicOrPartition.code(),
                    Some(part) => match part.lock().delete_records(p.offset) {
                        Some(low) => pr.low_watermark = low,
                        None => pr.error_code = E::OffsetOutOfRange.code(),
                    },
                }
                tr.partitions.push(pr);
            }
            r.topics.push(tr);
        }
        r
    }

    pub(super) fn describe_configs(&self, req: DescribeConfigsRequest) -> DescribeConfigsResponse {
        let mut r = DescribeConfigsResponse::default();
        let defaults = &self.shared.config.defaults;
        for res in req.resources {
            let mut out = DescribeConfigsResult::default();
            out.resource_type = res.resource_type;
            out.resource_name = res.resource_name.clone();
            let entries: Option<Vec<(String, String, bool)>> = match res.resource_type {
                2 => self.topic(res.resource_name.as_str()).map(|t| t.config.describe(defaults)),
                4 => Some(vec![
                    ("log.retention.bytes".into(), defaults.retention_bytes.to_string(), false),
                    ("log.retention.ms".into(), defaults.retention_ms.to_string(), false),
                    ("log.cleaner.delete.retention.ms".into(), defaults.delete_retention_ms.to_string(), false),
                    ("message.max.bytes".into(), defaults.max_message_bytes.to_string(), false),
                    ("num.partitions".into(), self.shared.config.default_partitions.to_string(), false),
                    ("auto.create.topics.enable".into(), self.shared.config.auto_create_topics.to_string(), false),
                ]),
                _ => None,
            };
            match entries {
                None if res.resource_type == 2 => out.error_code = E::UnknownTopicOrPartition.code(),
                None => out.error_code = E::InvalidRequest.code(),
                Some(entries) => {
                    let keys = res.configuration_keys.map(|k| k.iter().map(ToString::to_string).collect::<Vec<_>>());
                    out.configs = entries
                        .into_iter()
                        .filter(|(k, _, _)| keys.as_ref().is_none_or(|keys| keys.contains(k)))
                        .map(|(k, v, default)| {
                            let mut c = describe_configs_response::DescribeConfigsResourceResult::default();
                            c.name = s(&k);
                            c.value = Some(s(&v));
                            c.config_source = match (res.resource_type, default) {
                                (2, false) => 1,
                                (4, _) => 4,
                                _ => 5,
                            };
                            c
                        })
                        .collect();
                }
            }
            r.results.push(out);
        }
        r
    }
}
