//! The case workflow: a pure state machine. `(facts, actor, command) -> Result<Outcome>`.
//!
//! It owns which transitions exist and who may make them (role and ownership). It must not touch
//! storage, time or the network: the caller loads the facts, applies, and persists the outcome in
//! one transaction.

use serde::{Deserialize, Serialize};
use serde_json::json;

/// A user's numeric id.
pub type UserId = i64;
/// A department's numeric id.
pub type DepartmentId = i64;
/// A service point's numeric id.
pub type PointId = i64;

/// What a user is allowed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 代办员: opens cases at a service point.
    Agent,
    /// 网办中心 approver: takes cases from its department's queue and decides them.
    Approver,
    /// Department specialist invited into a case (多警种会诊).
    Expert,
    /// Watches queues, waiting times, ratings; follows up bad ratings.
    Supervisor,
    /// Reads audit trails and verifies archives.
    Auditor,
    /// Manages accounts, points and the catalogue.
    Admin,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 6] = [
        Role::Agent,
        Role::Approver,
        Role::Expert,
        Role::Supervisor,
        Role::Auditor,
        Role::Admin,
    ];

    /// The name used in the API, the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Approver => "approver",
            Role::Expert => "expert",
            Role::Supervisor => "supervisor",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Parses [`Role::as_str`] back.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Who is acting: enough to decide role and ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user.
    pub id: UserId,
    /// Its role.
    pub role: Role,
    /// The service point of an agent.
    pub point_id: Option<PointId>,
    /// The department of an approver or expert.
    pub department_id: Option<DepartmentId>,
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseState {
    /// In its department's queue, no approver yet.
    Waiting,
    /// Taken by an approver; the call is on.
    InCall,
    /// The approver asked for more material (补正); waiting for the agent.
    AwaitingMaterial,
    /// Approved; not yet issued.
    Approved,
    /// Rejected with a reason. Final.
    Rejected,
    /// Approved and issued (出件). Final.
    Issued,
    /// Cancelled by the agent. Final.
    Cancelled,
}

impl CaseState {
    /// Every state, in a fixed order.
    pub const ALL: [CaseState; 7] = [
        CaseState::Waiting,
        CaseState::InCall,
        CaseState::AwaitingMaterial,
        CaseState::Approved,
        CaseState::Rejected,
        CaseState::Issued,
        CaseState::Cancelled,
    ];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseState::Waiting => "waiting",
            CaseState::InCall => "in_call",
            CaseState::AwaitingMaterial => "awaiting_material",
            CaseState::Approved => "approved",
            CaseState::Rejected => "rejected",
            CaseState::Issued => "issued",
            CaseState::Cancelled => "cancelled",
        }
    }

    /// Parses [`CaseState::as_str`] back.
    pub fn parse(s: &str) -> Option<CaseState> {
        CaseState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether the case has ended (no further transitions; a rating may be recorded).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CaseState::Rejected | CaseState::Issued | CaseState::Cancelled
        )
    }

    /// Whether materials may still be uploaded.
    pub fn accepts_materials(self) -> bool {
        matches!(
            self,
            CaseState::Waiting | CaseState::InCall | CaseState::AwaitingMaterial
        )
    }

    /// Whether the resident's rating may be recorded.
    pub fn accepts_rating(self) -> bool {
        matches!(self, CaseState::Issued | CaseState::Rejected)
    }
}

/// The facts of a case that decide what may happen next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFacts {
    /// Current state.
    pub state: CaseState,
    /// The department whose queue it is (or was last) in.
    pub department_id: DepartmentId,
    /// The service point that opened it.
    pub point_id: PointId,
    /// The agent that opened it.
    pub agent_id: UserId,
    /// The approver holding it, once accepted.
    pub approver_id: Option<UserId>,
    /// Experts invited into it.
    pub experts: Vec<UserId>,
    /// Whether the approver has recorded the identity check.
    pub identity_checked: bool,
}

/// How the applicant's identity was checked (可信身份认证).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMethod {
    /// The ID card was shown on camera.
    IdCardShown,
    /// The ID card was captured as a material.
    IdCardCaptured,
    /// The face was compared with the ID card photo.
    FaceCompared,
}

/// Something a user asks to do to a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An approver takes the case from the queue.
    Accept,
    /// The holding approver invites an expert.
    InviteExpert {
        /// The invited user (must be an expert).
        expert: Actor,
    },
    /// The holding approver sends the case to another department's queue.
    Transfer {
        /// The department to send it to.
        to: DepartmentId,
    },
    /// The holding approver asks for more material (补正).
    RequestMaterial {
        /// What is missing.
        reason: String,
    },
    /// The agent (material supplied) or the approver resumes the call.
    Resume,
    /// The holding approver records how identity was checked.
    RecordIdentityCheck {
        /// The methods used; at least one.
        methods: Vec<IdentityMethod>,
    },
    /// The holding approver approves.
    Approve {
        /// Optional remark.
        reason: String,
    },
    /// The holding approver rejects.
    Reject {
        /// Why; required.
        reason: String,
    },
    /// The holding approver issues the result (出件).
    Issue,
    /// The agent cancels.
    Cancel {
        /// Why, as the resident said.
        reason: String,
    },
}

impl Command {
    /// The verb used in messages and the API path.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Accept => "accept",
            Command::InviteExpert { .. } => "invite",
            Command::Transfer { .. } => "transfer",
            Command::RequestMaterial { .. } => "request-material",
            Command::Resume => "resume",
            Command::RecordIdentityCheck { .. } => "identity-check",
            Command::Approve { .. } => "approve",
            Command::Reject { .. } => "reject",
            Command::Issue => "issue",
            Command::Cancel { .. } => "cancel",
        }
    }
}

/// A transition that happened: the new facts and the audit event that records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The facts after the transition.
    pub facts: CaseFacts,
    /// The audit event kind, e.g. `case.accepted`.
    pub event: &'static str,
    /// The event's details (no personal data).
    pub details: serde_json::Value,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// The actor may not see this case at all; reported as "not found" so nothing leaks.
    #[error("no such case")]
    NotVisible,
    /// The actor sees the case but may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Another approver accepted first.
    #[error("the case has already been taken by another approver")]
    AlreadyTaken,
    /// The command is not allowed in the current state.
    #[error("cannot {action}: the case is {state}")]
    InvalidTransition {
        /// The command's name.
        action: &'static str,
        /// The current state's name.
        state: &'static str,
    },
    /// A precondition of the command is not met.
    #[error("{0}")]
    Precondition(&'static str),
    /// A field of the command is invalid.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Whether `actor` may read the case at all.
pub fn can_see(actor: &Actor, facts: &CaseFacts) -> bool {
    match actor.role {
        Role::Agent => actor.point_id == Some(facts.point_id),
        Role::Approver => {
            facts.approver_id == Some(actor.id)
                || (facts.state == CaseState::Waiting
                    && actor.department_id == Some(facts.department_id))
        }
        Role::Expert => facts.experts.contains(&actor.id),
        Role::Supervisor | Role::Auditor => true,
        Role::Admin => false,
    }
}

/// Whether `actor` is the approver holding the case (and so sees the applicant unmasked).
pub fn holds(actor: &Actor, facts: &CaseFacts) -> bool {
    actor.role == Role::Approver && facts.approver_id == Some(actor.id)
}

/// Whether `actor` may join the case's call: its agent, the approver holding it or an invited
/// expert, while the case is in a call (or waiting for material).
pub fn may_join_call(actor: &Actor, facts: &CaseFacts) -> bool {
    let in_call = matches!(facts.state, CaseState::InCall | CaseState::AwaitingMaterial);
    let person = match actor.role {
        Role::Agent => facts.agent_id == actor.id,
        Role::Approver => holds(actor, facts),
        Role::Expert => facts.experts.contains(&actor.id),
        Role::Supervisor | Role::Auditor | Role::Admin => false,
    };
    in_call && person
}

/// Applies `command` by `actor` to a case, or says why not.
pub fn apply(
    facts: &CaseFacts,
    actor: &Actor,
    command: &Command,
) -> Result<Outcome, WorkflowError> {
    use CaseState::*;
    let action = command.name();
    let refuse = || WorkflowError::InvalidTransition {
        action,
        state: facts.state.as_str(),
    };
    // Accept is the one command an approver makes on a case it cannot otherwise see: a taken case
    // of its own department answers "already taken", not "not found".
    let same_department =
        actor.role == Role::Approver && actor.department_id == Some(facts.department_id);
    if !(can_see(actor, facts) || (matches!(command, Command::Accept) && same_department)) {
        return Err(WorkflowError::NotVisible);
    }
    let by_agent = actor.role == Role::Agent;
    let by_approver = actor.role == Role::Approver;
    let role_allowed = match command {
        Command::Cancel { .. } => by_agent,
        Command::Resume => by_agent || by_approver,
        _ => by_approver,
    };
    if !role_allowed {
        return Err(WorkflowError::Forbidden(match command {
            Command::Cancel { .. } => "only the case's agent may cancel it",
            Command::Resume => "only the case's agent or approver may resume it",
            _ => "only an approver may do this",
        }));
    }
    let holder = || {
        if holds(actor, facts) {
            Ok(())
        } else {
            Err(WorkflowError::Forbidden(
                "only the approver holding the case may do this",
            ))
        }
    };
    let required = |field: &'static str, value: &str| {
        if value.trim().is_empty() {
            Err(WorkflowError::InvalidField {
                field,
                reason: "must not be empty",
            })
        } else {
            Ok(())
        }
    };
    let mut next = facts.clone();
    let (event, details) = match command {
        Command::Accept => match facts.state {
            Waiting => {
                next.state = InCall;
                next.approver_id = Some(actor.id);
                ("case.accepted", json!({ "approver_id": actor.id }))
            }
            InCall | AwaitingMaterial | Approved if facts.approver_id != Some(actor.id) => {
                return Err(WorkflowError::AlreadyTaken);
            }
            _ => return Err(refuse()),
        },
        Command::InviteExpert { expert } => {
            if facts.state != InCall {
                return Err(refuse());
            }
            holder()?;
            if expert.role != Role::Expert {
                return Err(WorkflowError::InvalidField {
                    field: "expert_id",
                    reason: "the invited user is not an expert",
                });
            }
            if facts.experts.contains(&expert.id) {
                return Err(WorkflowError::Precondition(
                    "this expert is already invited",
                ));
            }
            next.experts.push(expert.id);
            (
                "case.expert_invited",
                json!({ "expert_id": expert.id, "expert_department_id": expert.department_id }),
            )
        }
        Command::Transfer { to } => {
            if facts.state != InCall {
                return Err(refuse());
            }
            holder()?;
            if *to == facts.department_id {
                return Err(WorkflowError::InvalidField {
                    field: "department",
                    reason: "the case is already in this department",
                });
            }
            next.state = Waiting;
            next.department_id = *to;
            next.approver_id = None;
            next.experts.clear();
            next.identity_checked = false;
            (
                "case.transferred",
                json!({ "from_department_id": facts.department_id, "to_department_id": to }),
            )
        }
        Command::RequestMaterial { reason } => {
            if facts.state != InCall {
                return Err(refuse());
            }
            holder()?;
            required("reason", reason)?;
            next.state = AwaitingMaterial;
            ("case.material_requested", json!({ "reason": reason }))
        }
        Command::Resume => {
            if facts.state != AwaitingMaterial {
                return Err(refuse());
            }
            if by_approver {
                holder()?;
            }
            next.state = InCall;
            ("case.resumed", json!({}))
        }
        Command::RecordIdentityCheck { methods } => {
            if facts.state != InCall {
                return Err(refuse());
            }
            holder()?;
            if methods.is_empty() {
                return Err(WorkflowError::InvalidField {
                    field: "methods",
                    reason: "name at least one way the identity was checked",
                });
            }
            next.identity_checked = true;
            ("case.identity_checked", json!({ "methods": methods }))
        }
        Command::Approve { reason } => {
            if facts.state != InCall {
                return Err(refuse());
            }
            holder()?;
            if !facts.identity_checked {
                return Err(WorkflowError::Precondition(
                    "record the applicant's identity check before approving",
                ));
            }
            next.state = Approved;
            ("case.approved", json!({ "reason": reason }))
        }
        Command::Reject { reason } => {
            if !matches!(facts.state, InCall | AwaitingMaterial) {
                return Err(refuse());
            }
            holder()?;
            required("reason", reason)?;
            next.state = Rejected;
            ("case.rejected", json!({ "reason": reason }))
        }
        Command::Issue => {
            if facts.state != Approved {
                return Err(refuse());
            }
            holder()?;
            next.state = Issued;
            ("case.issued", json!({}))
        }
        Command::Cancel { reason } => {
            if !matches!(facts.state, Waiting | InCall | AwaitingMaterial) {
                return Err(refuse());
            }
            next.state = Cancelled;
            ("case.cancelled", json!({ "reason": reason }))
        }
    };
    Ok(Outcome {
        facts: next,
        event,
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPT: DepartmentId = 1;
    const OTHER_DEPT: DepartmentId = 2;
    const POINT: PointId = 10;

    fn agent() -> Actor {
        Actor {
            id: 100,
            role: Role::Agent,
            point_id: Some(POINT),
            department_id: None,
        }
    }
    fn approver() -> Actor {
        Actor {
            id: 200,
            role: Role::Approver,
            point_id: None,
            department_id: Some(DEPT),
        }
    }
    fn second_approver() -> Actor {
        Actor {
            id: 201,
            role: Role::Approver,
            point_id: None,
            department_id: Some(DEPT),
        }
    }
    fn expert() -> Actor {
        Actor {
            id: 300,
            role: Role::Expert,
            point_id: None,
            department_id: Some(OTHER_DEPT),
        }
    }

    /// A case in `state`, held by `approver()` unless waiting, identity checked.
    fn case_in(state: CaseState) -> CaseFacts {
        CaseFacts {
            state,
            department_id: DEPT,
            point_id: POINT,
            agent_id: 100,
            approver_id: (state != CaseState::Waiting).then_some(200),
            experts: vec![],
            identity_checked: true,
        }
    }

    /// Each command with the actor entitled to it and valid fields.
    fn commands() -> Vec<(Command, Actor)> {
        vec![
            (Command::Accept, approver()),
            (Command::InviteExpert { expert: expert() }, approver()),
            (Command::Transfer { to: OTHER_DEPT }, approver()),
            (
                Command::RequestMaterial {
                    reason: "户口簿首页".into(),
                },
                approver(),
            ),
            (Command::Resume, agent()),
            (
                Command::RecordIdentityCheck {
                    methods: vec![IdentityMethod::FaceCompared],
                },
                approver(),
            ),
            (
                Command::Approve {
                    reason: String::new(),
                },
                approver(),
            ),
            (
                Command::Reject {
                    reason: "材料不全".into(),
                },
                approver(),
            ),
            (Command::Issue, approver()),
            (
                Command::Cancel {
                    reason: "群众不办了".into(),
                },
                agent(),
            ),
        ]
    }

    #[test]
    fn every_state_and_command_pair_is_allowed_exactly_per_the_transition_table() {
        use CaseState::*;
        let table: &[(&str, CaseState, CaseState)] = &[
            ("accept", Waiting, InCall),
            ("invite", InCall, InCall),
            ("transfer", InCall, Waiting),
            ("request-material", InCall, AwaitingMaterial),
            ("resume", AwaitingMaterial, InCall),
            ("identity-check", InCall, InCall),
            ("approve", InCall, Approved),
            ("reject", InCall, Rejected),
            ("reject", AwaitingMaterial, Rejected),
            ("issue", Approved, Issued),
            ("cancel", Waiting, Cancelled),
            ("cancel", InCall, Cancelled),
            ("cancel", AwaitingMaterial, Cancelled),
        ];
        let mut allowed = 0;
        for state in CaseState::ALL {
            for (command, actor) in commands() {
                let facts = case_in(state);
                let expected = table
                    .iter()
                    .find(|(name, from, _)| *name == command.name() && *from == state);
                match (apply(&facts, &actor, &command), expected) {
                    (Ok(outcome), Some((_, _, to))) => {
                        assert_eq!(
                            outcome.facts.state,
                            *to,
                            "{} from {state:?}",
                            command.name()
                        );
                        allowed += 1;
                    }
                    (Err(err), None) => {
                        // A refused transition names the current state (or says it was taken).
                        let message = err.to_string();
                        assert!(
                            message.contains(state.as_str())
                                || err == WorkflowError::AlreadyTaken
                                || matches!(err, WorkflowError::NotVisible),
                            "{} from {state:?}: {message}",
                            command.name()
                        );
                    }
                    (Ok(_), None) => panic!("{} from {state:?} must be refused", command.name()),
                    (Err(e), Some(_)) => {
                        panic!("{} from {state:?} must be allowed: {e}", command.name())
                    }
                }
            }
        }
        assert_eq!(allowed, table.len());
    }

    #[test]
    fn a_second_approver_accepting_a_taken_case_is_told_it_is_already_taken() {
        let taken = case_in(CaseState::InCall);
        assert_eq!(
            apply(&taken, &second_approver(), &Command::Accept),
            Err(WorkflowError::AlreadyTaken)
        );
        // ...but cannot otherwise see it.
        assert!(!can_see(&second_approver(), &taken));
        assert_eq!(
            apply(
                &taken,
                &second_approver(),
                &Command::RequestMaterial { reason: "x".into() }
            ),
            Err(WorkflowError::NotVisible)
        );
    }

    #[test]
    fn approvers_of_other_departments_neither_see_nor_accept_the_case() {
        let outsider = Actor {
            id: 250,
            role: Role::Approver,
            point_id: None,
            department_id: Some(OTHER_DEPT),
        };
        let waiting = case_in(CaseState::Waiting);
        assert!(!can_see(&outsider, &waiting));
        assert_eq!(
            apply(&waiting, &outsider, &Command::Accept),
            Err(WorkflowError::NotVisible)
        );
    }

    #[test]
    fn agents_of_other_points_and_admins_cannot_see_a_case() {
        let other_agent = Actor {
            id: 101,
            role: Role::Agent,
            point_id: Some(11),
            department_id: None,
        };
        let admin = Actor {
            id: 1,
            role: Role::Admin,
            point_id: None,
            department_id: None,
        };
        let facts = case_in(CaseState::InCall);
        assert!(!can_see(&other_agent, &facts));
        assert!(!can_see(&admin, &facts));
        assert_eq!(
            apply(
                &facts,
                &other_agent,
                &Command::Cancel {
                    reason: String::new()
                }
            ),
            Err(WorkflowError::NotVisible)
        );
    }

    #[test]
    fn only_invited_experts_see_the_case_and_they_cannot_decide_it() {
        let mut facts = case_in(CaseState::InCall);
        assert!(!can_see(&expert(), &facts));
        facts = apply(
            &facts,
            &approver(),
            &Command::InviteExpert { expert: expert() },
        )
        .unwrap()
        .facts;
        assert!(can_see(&expert(), &facts));
        assert!(matches!(
            apply(
                &facts,
                &expert(),
                &Command::Approve {
                    reason: String::new()
                }
            ),
            Err(WorkflowError::Forbidden(_))
        ));
    }

    #[test]
    fn only_the_case_agent_its_approver_and_invited_experts_may_join_its_call_while_it_is_on() {
        let mut facts = case_in(CaseState::InCall);
        facts.experts = vec![300];
        let other_agent_same_point = Actor {
            id: 101,
            role: Role::Agent,
            point_id: Some(POINT),
            department_id: None,
        };
        let supervisor = Actor {
            id: 400,
            role: Role::Supervisor,
            point_id: None,
            department_id: None,
        };
        assert!(may_join_call(&agent(), &facts));
        assert!(may_join_call(&approver(), &facts));
        assert!(may_join_call(&expert(), &facts));
        assert!(!may_join_call(&second_approver(), &facts));
        assert!(!may_join_call(&other_agent_same_point, &facts));
        assert!(!may_join_call(&supervisor, &facts));
        for state in CaseState::ALL {
            let facts = CaseFacts {
                state,
                ..facts.clone()
            };
            let open = matches!(state, CaseState::InCall | CaseState::AwaitingMaterial);
            assert_eq!(may_join_call(&agent(), &facts), open, "{state:?}");
        }
    }

    #[test]
    fn approving_requires_the_identity_check_first() {
        let mut facts = case_in(CaseState::InCall);
        facts.identity_checked = false;
        let err = apply(
            &facts,
            &approver(),
            &Command::Approve {
                reason: String::new(),
            },
        )
        .unwrap_err();
        assert!(matches!(err, WorkflowError::Precondition(_)));
        let checked = apply(
            &facts,
            &approver(),
            &Command::RecordIdentityCheck {
                methods: vec![IdentityMethod::IdCardShown],
            },
        )
        .unwrap();
        assert!(checked.facts.identity_checked);
        assert_eq!(checked.event, "case.identity_checked");
    }

    #[test]
    fn reject_and_request_material_need_a_reason_and_an_identity_check_needs_a_method() {
        let facts = case_in(CaseState::InCall);
        for command in [
            Command::Reject {
                reason: "  ".into(),
            },
            Command::RequestMaterial {
                reason: String::new(),
            },
            Command::RecordIdentityCheck { methods: vec![] },
        ] {
            assert!(matches!(
                apply(&facts, &approver(), &command),
                Err(WorkflowError::InvalidField { .. })
            ));
        }
    }

    #[test]
    fn transfer_puts_the_case_in_the_other_queue_with_no_approver_or_experts() {
        let mut facts = case_in(CaseState::InCall);
        facts.experts = vec![300];
        let out = apply(&facts, &approver(), &Command::Transfer { to: OTHER_DEPT }).unwrap();
        assert_eq!(out.facts.state, CaseState::Waiting);
        assert_eq!(out.facts.department_id, OTHER_DEPT);
        assert_eq!(out.facts.approver_id, None);
        assert!(out.facts.experts.is_empty());
        assert!(apply(&facts, &approver(), &Command::Transfer { to: DEPT }).is_err());
    }

    #[test]
    fn a_non_holding_approver_of_the_department_may_not_act_on_a_waiting_case_except_accept() {
        let waiting = case_in(CaseState::Waiting);
        assert!(apply(&waiting, &second_approver(), &Command::Accept).is_ok());
        assert!(matches!(
            apply(
                &waiting,
                &second_approver(),
                &Command::Cancel {
                    reason: String::new()
                }
            ),
            Err(WorkflowError::Forbidden(_))
        ));
    }

    #[test]
    fn inviting_a_non_expert_or_the_same_expert_twice_is_refused() {
        let facts = case_in(CaseState::InCall);
        assert!(
            apply(
                &facts,
                &approver(),
                &Command::InviteExpert { expert: agent() }
            )
            .is_err()
        );
        let once = apply(
            &facts,
            &approver(),
            &Command::InviteExpert { expert: expert() },
        )
        .unwrap();
        assert!(matches!(
            apply(
                &once.facts,
                &approver(),
                &Command::InviteExpert { expert: expert() }
            ),
            Err(WorkflowError::Precondition(_))
        ));
    }
}
