//! Microsoft Teams approver for `approval-core`: to come with the Teams
//! issue.

#![forbid(unsafe_code)]
