//! The agent (Faust style): per-session state (actions so far, recent choices), a prompt
//! built from that state and the event, and a model call (simulated: a configurable delay
//! and a deterministic reply).

use crate::event::{Beat, StoryEvent};
use crate::stage::{Meta, Processor};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// The stage's name.
pub const NAME: &str = "agent";

/// How the agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConfig {
    /// How long the simulated model takes per call.
    pub model_latency: Duration,
    /// How many recent choices a session's prompt recalls.
    pub history: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self { model_latency: Duration::ZERO, history: 3 }
    }
}

#[derive(Debug, Default)]
struct Session {
    actions: u64,
    recent: VecDeque<String>,
}

/// The agent's state: one entry per session it has seen.
#[derive(Debug, Default)]
pub struct Agent {
    config: AgentConfig,
    sessions: HashMap<u64, Session>,
}

/// The first `n` characters of `s`.
fn clip(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

impl Agent {
    pub fn new(config: AgentConfig) -> Self {
        Self { config, sessions: HashMap::new() }
    }

    /// Updates the session's state and returns its next beat (without the model's delay).
    pub fn beat(&mut self, event: &StoryEvent) -> Beat {
        let s = self.sessions.entry(event.session).or_default();
        s.actions += 1;
        let action = clip(&event.action, 48);
        let story_so_far = if s.recent.is_empty() {
            "nothing yet".to_owned()
        } else {
            s.recent.iter().map(String::as_str).collect::<Vec<_>>().join("; ")
        };
        let prompt = format!(
            "Session {} at beat {}. The story so far: {story_so_far}. The player now: {action}. \
             Continue the story in one vivid sentence.",
            event.session, s.actions
        );
        if s.recent.len() == self.config.history {
            s.recent.pop_front();
        }
        if self.config.history > 0 {
            s.recent.push_back(clip(action, 16).to_owned());
        }
        let text = format!("Beat {}: the tale turns on \"{}\".", s.actions, clip(action, 16));
        Beat { number: s.actions, prompt, text }
    }

    /// Sessions with state.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

impl Processor for Agent {
    const NAME: &'static str = NAME;

    async fn process(&mut self, event: &mut StoryEvent, _meta: &Meta) -> Result<(), String> {
        if event.action.is_empty() {
            return Err("the action is empty: nothing to continue the story from".into());
        }
        let beat = self.beat(event);
        if !self.config.model_latency.is_zero() {
            tokio::time::sleep(self.config.model_latency).await;
        }
        event.beat = Some(beat);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(session: u64, action: &str) -> StoryEvent {
        StoryEvent { run: 1, id: 0, session, action: action.into(), beat: None, window: None }
    }

    #[test]
    fn state_is_per_session_and_prompts_recall_recent_choices() {
        let mut agent = Agent::new(AgentConfig { history: 2, ..AgentConfig::default() });
        assert_eq!(agent.beat(&event(1, "open the door")).number, 1);
        assert_eq!(agent.beat(&event(2, "hide")).number, 1);
        agent.beat(&event(1, "light a torch"));
        let b = agent.beat(&event(1, "run"));
        assert_eq!(b.number, 3);
        assert!(b.prompt.contains("open the door; light a torch"), "{}", b.prompt);
        // Only `history` choices are recalled.
        let b = agent.beat(&event(1, "jump"));
        assert!(b.prompt.contains("light a torch; run") && !b.prompt.contains("open the door"), "{}", b.prompt);
        assert_eq!(agent.sessions(), 2);
    }

    #[test]
    fn clips_on_character_boundaries() {
        assert_eq!(clip("héllo wörld", 7), "héllo w");
        assert_eq!(clip("short", 48), "short");
    }

    #[tokio::test]
    async fn an_empty_action_is_refused_with_a_reason() {
        let mut agent = Agent::default();
        let mut e = event(1, "");
        let err = agent.process(&mut e, &Meta { intended_ns: 0, ingress_ns: 0 }).await.unwrap_err();
        assert!(err.contains("empty"));
        let mut e = event(1, "go");
        agent.process(&mut e, &Meta { intended_ns: 0, ingress_ns: 0 }).await.unwrap();
        assert_eq!(e.beat.unwrap().number, 1);
    }
}
