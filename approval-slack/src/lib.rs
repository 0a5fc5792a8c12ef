//! Slack approver for `approval-core`: to come with the Slack issue.

#![forbid(unsafe_code)]
