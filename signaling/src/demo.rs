//! `serve --demo`: seeds departments, service points, a catalogue of items and one user of each
//! role, so a newcomer can try a whole case at once. Idempotent: seeds only an empty database.

use rusqlite::Connection;

use crate::accounts::{self, NewUser};
use crate::catalogue::{self, PointKind};
use crate::error::Result;
use crate::workflow::Role;

/// A demo login, printed at start.
#[derive(Debug, Clone)]
pub struct DemoLogin {
    /// Role.
    pub role: Role,
    /// Login name.
    pub username: &'static str,
    /// Password.
    pub password: &'static str,
    /// What the account is for.
    pub note: &'static str,
}

/// The demo users: one of each role (two approvers, so accept races can be tried).
pub const DEMO_LOGINS: &[DemoLogin] = &[
    DemoLogin {
        role: Role::Agent,
        username: "agent",
        password: "demo-agent-2026",
        note: "代办员 · 崧厦镇祝温村代办点",
    },
    DemoLogin {
        role: Role::Approver,
        username: "approver",
        password: "demo-approver-2026",
        note: "网办中心审批员 · 户政",
    },
    DemoLogin {
        role: Role::Approver,
        username: "approver2",
        password: "demo-approver-2026",
        note: "网办中心审批员 · 户政",
    },
    DemoLogin {
        role: Role::Expert,
        username: "expert",
        password: "demo-expert-2026",
        note: "警种专家 · 出入境",
    },
    DemoLogin {
        role: Role::Supervisor,
        username: "supervisor",
        password: "demo-supervisor-2026",
        note: "督导员",
    },
    DemoLogin {
        role: Role::Auditor,
        username: "auditor",
        password: "demo-auditor-2026",
        note: "审计员",
    },
    DemoLogin {
        role: Role::Admin,
        username: "admin",
        password: "demo-admin-2026",
        note: "管理员",
    },
];

/// Seeds the demo data into an empty database; returns false when data already existed.
pub fn seed(conn: &mut Connection, now: i64) -> Result<bool> {
    let existing: i64 = conn.query_row("SELECT COUNT(*) FROM departments", [], |r| r.get(0))?;
    if existing > 0 {
        return Ok(false);
    }
    let tx = conn.transaction()?;
    for (code, name) in [
        ("huzheng", "户政"),
        ("jiaojing", "交警车驾管"),
        ("churujing", "出入境"),
        ("zhian", "治安"),
    ] {
        catalogue::add_department(&tx, code, name)?;
    }
    for (code, name, kind, township) in [
        (
            "sx-zhuwen",
            "崧厦镇祝温村代办点",
            PointKind::VillagePoint,
            "崧厦街道",
        ),
        (
            "zz-jingwu",
            "章镇警务站",
            PointKind::PoliceStation,
            "章镇镇",
        ),
        (
            "sp-daiban",
            "上浦镇村级代办点",
            PointKind::VillagePoint,
            "上浦镇",
        ),
        (
            "sx-hall",
            "崧厦派出所服务大厅",
            PointKind::ServiceHall,
            "崧厦街道",
        ),
    ] {
        catalogue::add_point(&tx, code, name, kind, township)?;
    }
    let items: &[(&str, &str, &str, &[&str], bool)] = &[
        (
            "id-loss",
            "居民身份证挂失",
            "huzheng",
            &["居民身份证号码", "本人现场照片"],
            true,
        ),
        (
            "id-renew",
            "居民身份证换领",
            "huzheng",
            &["原居民身份证", "户口簿"],
            false,
        ),
        (
            "hukou-move",
            "户口迁移",
            "huzheng",
            &["户口簿", "准迁证明", "居民身份证"],
            false,
        ),
        (
            "birth-reg",
            "出生登记",
            "huzheng",
            &["出生医学证明", "父母户口簿", "父母居民身份证"],
            false,
        ),
        (
            "inspection-mark",
            "机动车免检标志申领",
            "jiaojing",
            &["机动车行驶证", "交强险凭证"],
            true,
        ),
        (
            "licence-renew",
            "机动车驾驶证期满换证",
            "jiaojing",
            &["机动车驾驶证", "身体条件证明"],
            false,
        ),
        (
            "exit-endorse",
            "往来港澳通行证再次签注",
            "churujing",
            &["往来港澳通行证", "居民身份证"],
            true,
        ),
        (
            "no-record",
            "无犯罪记录证明",
            "zhian",
            &["居民身份证", "用途说明"],
            false,
        ),
    ];
    for (code, name, department, materials, simple) in items {
        let materials: Vec<String> = materials.iter().map(|m| m.to_string()).collect();
        catalogue::add_item(&tx, code, name, department, &materials, *simple)?;
    }
    for login in DEMO_LOGINS {
        let (point, department, display) = match login.username {
            "agent" => (Some("sx-zhuwen"), None, "王代办"),
            "approver" => (None, Some("huzheng"), "李审批"),
            "approver2" => (None, Some("huzheng"), "赵审批"),
            "expert" => (None, Some("churujing"), "陈专家"),
            "supervisor" => (None, None, "周督导"),
            "auditor" => (None, None, "吴审计"),
            _ => (None, None, "郑管理"),
        };
        accounts::add_user(
            &tx,
            &NewUser {
                username: login.username.to_string(),
                display_name: display.to_string(),
                role: login.role,
                point_code: point.map(str::to_string),
                department_code: department.map(str::to_string),
                password: login.password.to_string(),
            },
            now,
        )?;
    }
    tx.commit()?;
    Ok(true)
}
