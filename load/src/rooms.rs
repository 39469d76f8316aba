//! Our server's side of a benchmark's set-up: the demo accounts logged in (and `load-expert-N`
//! experts added when a room needs more), and cases opened, accepted and invited to, one per
//! room. Shared by the relay scenarios, the joins benchmark and the signaling benchmark; it
//! touches only the HTTP API, never a call.

use serde_json::json;

use crate::LoadError;
use crate::scenario::{RoomPlan, Seat};
use crate::server::{Server, Token};

/// The item the generated cases are opened for (a department the demo approvers belong to).
pub const ITEM: &str = "id-loss";

/// The password of a `--demo` login (the demo passwords are public).
pub fn demo_password(username: &str) -> Result<&'static str, LoadError> {
    signaling::demo::DEMO_LOGINS
        .iter()
        .find(|l| l.username == username)
        .map(|l| l.password)
        .ok_or_else(|| LoadError::Protocol(format!("no demo login {username}")))
}

/// Logged-in accounts: the demo agent, approver and admin, and experts by seat number.
pub(crate) struct Accounts {
    agent: Token,
    approver: Token,
    admin: Token,
    /// Token and user id of each expert seat filled so far.
    experts: Vec<(Token, i64)>,
}

impl Accounts {
    /// Logs in the demo agent, approver and admin.
    pub(crate) async fn login(server: &Server) -> Result<Self, LoadError> {
        Ok(Self {
            agent: server.login("agent", demo_password("agent")?).await?,
            approver: server.login("approver", demo_password("approver")?).await?,
            admin: server.login("admin", demo_password("admin")?).await?,
            experts: Vec::new(),
        })
    }

    /// Makes sure `count` experts exist and are logged in: the demo expert, then `load-expert-N`
    /// accounts added through the admin API.
    async fn experts(&mut self, server: &Server, count: usize) -> Result<(), LoadError> {
        while self.experts.len() < count {
            let n = self.experts.len();
            let token = if n == 0 {
                server.login("expert", demo_password("expert")?).await?
            } else {
                let username = format!("load-expert-{n}");
                let password = format!("load-expert-{n}-password");
                let user = json!({ "username": username, "display_name": username, "role": "expert", "department": "churujing", "password": password });
                server.ensure_user(&self.admin, &user).await?;
                server.login(&username, &password).await?
            };
            let id = server.user_id(&token).await?;
            self.experts.push((token, id));
        }
        Ok(())
    }

    /// The account that takes a seat.
    pub(crate) fn token(&self, seat: Seat) -> &Token {
        match seat {
            Seat::Agent => &self.agent,
            Seat::Approver => &self.approver,
            Seat::Expert(n) => &self.experts[n].0,
        }
    }
}

/// Opens, accepts and invites for one room; returns the case id.
async fn open_room(
    server: &Server,
    accounts: &Accounts,
    room: &RoomPlan,
) -> Result<i64, LoadError> {
    let case = server.open_case(&accounts.agent, ITEM).await?;
    server
        .act(&accounts.approver, case, "accept", json!({}))
        .await?;
    for (_, id) in accounts.experts.iter().take(room.experts()) {
        server
            .act(
                &accounts.approver,
                case,
                "invite",
                json!({ "expert_id": id }),
            )
            .await?;
    }
    Ok(case)
}

/// Opens a case per room, one after another, with every expert its seats need invited; returns
/// the case ids in the rooms' order. Afterwards every seat's account may join its room's call.
pub(crate) async fn open_rooms(
    server: &Server,
    accounts: &mut Accounts,
    rooms: &[RoomPlan],
) -> Result<Vec<i64>, LoadError> {
    let experts = rooms.iter().map(RoomPlan::experts).max().unwrap_or(0);
    accounts.experts(server, experts).await?;
    let mut cases = Vec::with_capacity(rooms.len());
    for room in rooms {
        cases.push(open_room(server, accounts, room).await?);
    }
    Ok(cases)
}
