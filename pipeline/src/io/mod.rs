//! What the stages talk to besides each other: Kafka clients and admin ([`kafka`]),
//! PostgreSQL's replication protocol ([`postgres`]) and the edge cache ([`cache`]). Nothing
//! here imports a stage.

pub mod cache;
pub mod clients;
pub mod kafka;
pub mod postgres;
pub mod secrets;
