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
    /// 群众: the applicant of one case, joining its call from home through an invitation link
    /// (群众远程接入). No password: the account exists for that invitation only, and reaches the
    /// case's call and uploads and nothing else (`api::resident_may_call`).
    Resident,
}

impl Role {
    /// Every role, in a fixed order.
    pub const ALL: [Role; 7] = [
        Role::Agent,
        Role::Approver,
        Role::Expert,
        Role::Supervisor,
        Role::Auditor,
        Role::Admin,
        Role::Resident,
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
            Role::Resident => "resident",
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
    /// Residents who joined through an invitation that is not revoked (群众远程接入).
    pub residents: Vec<UserId>,
    /// Whether the approver has recorded the identity check.
    pub identity_checked: bool,
    /// When it was decided (approved or rejected), epoch ms. Read from storage; `apply` leaves
    /// it alone (the workflow has no clock), the store sets it with the transition.
    pub decided_at: Option<i64>,
    /// When it ended (issued, rejected, cancelled), epoch ms; like `decided_at`.
    pub ended_at: Option<i64>,
}

impl CaseFacts {
    /// The people of the case's call: its agent, the approver holding it, invited experts and
    /// residents who joined from home.
    pub fn call_people(&self) -> Vec<UserId> {
        let mut people = vec![self.agent_id];
        people.extend(self.approver_id);
        people.extend(&self.experts);
        people.extend(&self.residents);
        people
    }
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
        // A resident reaches its call through `may_join_call`, never the case itself.
        Role::Admin | Role::Resident => false,
    }
}

/// Whether `actor` is the agent who opened the case. Its point's other agents see the case, but
/// only this one acts on it (cancels, adds materials, joins the call, records the rating), so that
/// one named person answers for the resident's side of it, and consent to recording is asked of
/// the person actually in the call.
pub fn is_case_agent(actor: &Actor, facts: &CaseFacts) -> bool {
    actor.role == Role::Agent && facts.agent_id == actor.id
}

/// Whether `actor` is the approver holding the case (and so sees the applicant unmasked).
pub fn holds(actor: &Actor, facts: &CaseFacts) -> bool {
    actor.role == Role::Approver && facts.approver_id == Some(actor.id)
}

/// How long the call of a decided case stays open after its last step (the decision, or issuing
/// or the rejection that ended it), so that the approver can tell the result on video.
pub const CALL_AFTER_DECISION_MS: i64 = 15 * 60_000;

/// Whether the case's call is open at `now`: while the case is in a call or waiting for material,
/// and after the decision (approved, then issued or rejected) until [`CALL_AFTER_DECISION_MS`]
/// after its last step. A cancelled or transferred case has no call.
pub fn call_open(facts: &CaseFacts, now: i64) -> bool {
    match facts.state {
        CaseState::InCall | CaseState::AwaitingMaterial => true,
        CaseState::Approved | CaseState::Rejected | CaseState::Issued => facts
            .ended_at
            .or(facts.decided_at)
            .is_some_and(|at| now < at + CALL_AFTER_DECISION_MS),
        CaseState::Waiting | CaseState::Cancelled => false,
    }
}

/// Whether `actor` may join the case's call: its agent, the approver holding it or an invited
/// expert, while the call is open ([`call_open`]).
pub fn may_join_call(actor: &Actor, facts: &CaseFacts, now: i64) -> bool {
    let in_call = call_open(facts, now);
    let person = match actor.role {
        Role::Agent => is_case_agent(actor, facts),
        Role::Approver => holds(actor, facts),
        Role::Expert => facts.experts.contains(&actor.id),
        Role::Resident => facts.residents.contains(&actor.id),
        Role::Supervisor | Role::Auditor | Role::Admin => false,
    };
    in_call && person
}

/// Whether `actor` may invite the applicant to join the case's call from home: the case's agent
/// or the approver holding it, while the case is waiting or in its call.
pub fn may_invite_resident(actor: &Actor, facts: &CaseFacts) -> bool {
    let open = matches!(
        facts.state,
        CaseState::Waiting | CaseState::InCall | CaseState::AwaitingMaterial
    );
    open && (is_case_agent(actor, facts) || holds(actor, facts))
}

/// The longest reason a command may carry (it reaches the audit trail and the archive).
pub const MAX_REASON_CHARS: usize = 500;

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
    let by_agent = is_case_agent(actor, facts);
    let by_approver = actor.role == Role::Approver;
    let role_allowed = match command {
        Command::Cancel { .. } => by_agent,
        Command::Resume => by_agent || by_approver,
        _ => by_approver,
    };
    if !role_allowed {
        return Err(WorkflowError::Forbidden(match command {
            Command::Cancel { .. } => {
                "only the agent who opened the case may cancel it (colleagues at the point see it)"
            }
            Command::Resume => "only the agent who opened the case or its approver may resume it",
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
    if let Command::RequestMaterial { reason }
    | Command::Approve { reason }
    | Command::Reject { reason }
    | Command::Cancel { reason } = command
        && reason.chars().count() > MAX_REASON_CHARS
    {
        return Err(WorkflowError::InvalidField {
            field: "reason",
            reason: "at most 500 characters",
        });
    }
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
            // Whether the applicant was in the call from home (群众远程接入) when checked.
            let remote = !facts.residents.is_empty();
            let details = json!({ "methods": methods, "resident_remote": remote });
            ("case.identity_checked", details)
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

/// An action the caller may take on a case now, or one its role and the state allow that waits
/// for something first (then `allowed` is false and `reason` says what).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AvailableAction {
    /// The action's name, as in `POST /api/cases/{id}/actions/{action}` (approve and reject go
    /// through the signed decision).
    pub action: &'static str,
    /// Whether it would be accepted now.
    pub allowed: bool,
    /// Why not yet, when it would be refused.
    pub reason: Option<String>,
}

/// The actions `actor` may take on the case now, by a dry run of [`apply`] for each command: the
/// page shows these instead of keeping its own copy of the rules. A command that the role or the
/// state rules out is left out; one that waits for a precondition is listed as not allowed, with
/// the reason.
pub fn available(facts: &CaseFacts, actor: &Actor) -> Vec<AvailableAction> {
    // Placeholder arguments: the real ones are checked when the action is sent.
    let probe_expert = Actor {
        id: -1,
        role: Role::Expert,
        point_id: None,
        department_id: None,
    };
    let filled = || "-".to_string();
    let probes = [
        Command::Accept,
        Command::RecordIdentityCheck {
            methods: vec![IdentityMethod::IdCardShown],
        },
        Command::Approve { reason: filled() },
        Command::Reject { reason: filled() },
        Command::Issue,
        Command::RequestMaterial { reason: filled() },
        Command::Resume,
        Command::InviteExpert {
            expert: probe_expert,
        },
        Command::Transfer { to: -1 },
        Command::Cancel { reason: filled() },
    ];
    probes
        .iter()
        .filter_map(|command| match apply(facts, actor, command) {
            Ok(_) => Some(AvailableAction {
                action: command.name(),
                allowed: true,
                reason: None,
            }),
            Err(WorkflowError::Precondition(why)) => Some(AvailableAction {
                action: command.name(),
                allowed: false,
                reason: Some(why.to_string()),
            }),
            Err(_) => None,
        })
        .collect()
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
            residents: vec![],
            identity_checked: true,
            decided_at: None,
            ended_at: None,
        }
    }

    #[test]
    fn the_case_agent_or_holding_approver_may_invite_the_applicant_while_the_case_is_open_and_a_resident_joins_only_its_own_call()
     {
        let agent = Actor {
            id: 100,
            role: Role::Agent,
            point_id: Some(POINT),
            department_id: None,
        };
        let colleague = Actor {
            id: 101,
            ..agent.clone()
        };
        let holder = Actor {
            id: 200,
            role: Role::Approver,
            point_id: None,
            department_id: Some(DEPT),
        };
        let resident = Actor {
            id: 900,
            role: Role::Resident,
            point_id: None,
            department_id: None,
        };
        for state in [
            CaseState::Waiting,
            CaseState::InCall,
            CaseState::AwaitingMaterial,
        ] {
            assert!(may_invite_resident(&agent, &case_in(state)), "{state:?}");
            assert!(
                !may_invite_resident(&colleague, &case_in(state)),
                "{state:?}"
            );
        }
        assert!(may_invite_resident(&holder, &case_in(CaseState::InCall)));
        for state in [CaseState::Approved, CaseState::Issued, CaseState::Cancelled] {
            assert!(!may_invite_resident(&agent, &case_in(state)), "{state:?}");
        }
        let mut facts = case_in(CaseState::InCall);
        assert!(!may_join_call(&resident, &facts, 0), "not invited");
        facts.residents.push(900);
        assert!(may_join_call(&resident, &facts, 0));
        assert!(!can_see(&resident, &facts), "the call, not the case");
        assert!(facts.call_people().contains(&900));
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
        const NOW: i64 = 1_000_000_000;
        assert!(may_join_call(&agent(), &facts, NOW));
        assert!(may_join_call(&approver(), &facts, NOW));
        assert!(may_join_call(&expert(), &facts, NOW));
        assert!(!may_join_call(&second_approver(), &facts, NOW));
        assert!(!may_join_call(&other_agent_same_point, &facts, NOW));
        assert!(!may_join_call(&supervisor, &facts, NOW));
        for state in CaseState::ALL {
            let facts = CaseFacts {
                state,
                decided_at: Some(NOW - 1000),
                ended_at: state.is_final().then_some(NOW - 1000),
                ..facts.clone()
            };
            let open = !matches!(state, CaseState::Waiting | CaseState::Cancelled);
            assert_eq!(may_join_call(&agent(), &facts, NOW), open, "{state:?}");
        }
    }

    #[test]
    fn the_call_stays_open_through_the_decision_and_issuing_until_the_time_limit_after_the_last_step()
     {
        const DECIDED: i64 = 5_000_000;
        let approved = CaseFacts {
            decided_at: Some(DECIDED),
            ..case_in(CaseState::Approved)
        };
        assert!(call_open(&approved, DECIDED));
        assert!(call_open(&approved, DECIDED + CALL_AFTER_DECISION_MS - 1));
        assert!(!call_open(&approved, DECIDED + CALL_AFTER_DECISION_MS));
        // Issuing restarts the limit: it counts from the last step.
        let issued = CaseFacts {
            state: CaseState::Issued,
            ended_at: Some(DECIDED + 60_000),
            ..approved.clone()
        };
        assert!(call_open(&issued, DECIDED + CALL_AFTER_DECISION_MS));
        assert!(!call_open(
            &issued,
            DECIDED + 60_000 + CALL_AFTER_DECISION_MS
        ));
        // A cancelled case has no call, whatever its times.
        let cancelled = CaseFacts {
            state: CaseState::Cancelled,
            ..issued
        };
        assert!(!call_open(&cancelled, DECIDED));
    }

    fn names(actions: &[AvailableAction]) -> Vec<(&'static str, bool)> {
        actions.iter().map(|a| (a.action, a.allowed)).collect()
    }

    #[test]
    fn available_actions_follow_the_workflow_and_name_what_a_blocked_one_waits_for() {
        let mut facts = case_in(CaseState::InCall);
        facts.identity_checked = false;
        let held = available(&facts, &approver());
        assert_eq!(
            names(&held),
            [
                ("identity-check", true),
                ("approve", false),
                ("reject", true),
                ("request-material", true),
                ("invite", true),
                ("transfer", true),
            ]
        );
        let approve = held.iter().find(|a| a.action == "approve").unwrap();
        assert!(
            approve
                .reason
                .as_deref()
                .unwrap()
                .contains("identity check")
        );
        facts.identity_checked = true;
        assert!(
            available(&facts, &approver())
                .iter()
                .any(|a| a.action == "approve" && a.allowed)
        );
        // After approval, issuing is the one next step of the holder; the agent has none.
        let approved = case_in(CaseState::Approved);
        assert_eq!(names(&available(&approved, &approver())), [("issue", true)]);
        assert!(available(&approved, &agent()).is_empty());
        assert_eq!(
            names(&available(&case_in(CaseState::AwaitingMaterial), &agent())),
            [("resume", true), ("cancel", true)]
        );
        assert_eq!(
            names(&available(&case_in(CaseState::Waiting), &approver())),
            [("accept", true)]
        );
        assert!(available(&case_in(CaseState::InCall), &expert()).is_empty());
        assert!(available(&case_in(CaseState::Issued), &approver()).is_empty());
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
        assert_eq!(checked.details["resident_remote"], false);
        let mut remote = facts.clone();
        remote.residents.push(900);
        let checked = apply(
            &remote,
            &approver(),
            &Command::RecordIdentityCheck {
                methods: vec![IdentityMethod::IdCardShown],
            },
        )
        .unwrap();
        assert_eq!(
            checked.details["resident_remote"], true,
            "the check records that the applicant was in the call from home"
        );
    }

    #[test]
    fn a_reason_longer_than_500_characters_is_refused_naming_the_field() {
        let long = "补".repeat(MAX_REASON_CHARS + 1);
        let cases = [
            (
                agent(),
                CaseState::Waiting,
                Command::Cancel {
                    reason: long.clone(),
                },
            ),
            (
                approver(),
                CaseState::InCall,
                Command::RequestMaterial {
                    reason: long.clone(),
                },
            ),
            (
                approver(),
                CaseState::InCall,
                Command::Reject {
                    reason: long.clone(),
                },
            ),
        ];
        for (actor, state, command) in cases {
            let err = apply(&case_in(state), &actor, &command).unwrap_err();
            assert_eq!(
                err.to_string(),
                "reason: at most 500 characters",
                "{command:?}"
            );
        }
        let fits = Command::Cancel {
            reason: "补".repeat(MAX_REASON_CHARS),
        };
        assert!(apply(&case_in(CaseState::Waiting), &agent(), &fits).is_ok());
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
