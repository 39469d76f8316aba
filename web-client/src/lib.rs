//! The browser app (agent, approver, supervisor, auditor pages), embedded in the binary.
