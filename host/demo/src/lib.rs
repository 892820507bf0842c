//! The main job's embedded default: a task family in which tools matter and mistakes cascade, small
//! enough to train a teacher and a student on two CPU cores in minutes.

pub mod build;
pub mod evaluate;
pub mod gold;
pub mod jobs;
pub mod onpolicy;
pub mod pipeline;
pub mod plot;
pub mod report;
pub mod settings;
pub mod stats;
pub mod takeover;
pub mod tasks;

#[cfg(test)]
mod e2e_tests;
