//! The catalogue: departments, service points and service items (事项), and the demo seed.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::workflow::{DepartmentId, PointId};

/// A department of the public-security bureau (户政, 交警车驾管, 出入境 …).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Department {
    /// Id.
    pub id: DepartmentId,
    /// Short code, e.g. `huzheng`.
    pub code: String,
    /// Name, e.g. 户政.
    pub name: String,
}

/// The kinds of service point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// 派出所服务大厅.
    ServiceHall,
    /// 警务站(室)延伸点.
    PoliceStation,
    /// 村级(社会化)代办点.
    VillagePoint,
    /// 背包警务 team.
    Backpack,
}

impl PointKind {
    /// Every kind.
    pub const ALL: [PointKind; 4] = [
        PointKind::ServiceHall,
        PointKind::PoliceStation,
        PointKind::VillagePoint,
        PointKind::Backpack,
    ];
    /// The name used in the API and database.
    pub fn as_str(self) -> &'static str {
        match self {
            PointKind::ServiceHall => "service_hall",
            PointKind::PoliceStation => "police_station",
            PointKind::VillagePoint => "village_point",
            PointKind::Backpack => "backpack",
        }
    }
    /// Parses [`PointKind::as_str`].
    pub fn parse(s: &str) -> Option<PointKind> {
        PointKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A place where agents serve residents.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServicePoint {
    /// Id.
    pub id: PointId,
    /// Short code.
    pub code: String,
    /// Name, e.g. 崧厦镇祝温村代办点.
    pub name: String,
    /// Kind.
    pub kind: PointKind,
    /// Township (乡镇/街道).
    pub township: String,
}

/// A service item (事项) a case is opened for.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceItem {
    /// Id.
    pub id: i64,
    /// Short code.
    pub code: String,
    /// Name, e.g. 居民身份证挂失.
    pub name: String,
    /// The department that decides it.
    pub department_id: DepartmentId,
    /// The materials the resident must provide.
    pub required_materials: Vec<String>,
    /// A simple item, with the 10-minute target.
    pub simple: bool,
}

/// The whole catalogue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Catalogue {
    /// Departments.
    pub departments: Vec<Department>,
    /// Service points.
    pub points: Vec<ServicePoint>,
    /// Service items.
    pub items: Vec<ServiceItem>,
}

fn check_code(code: &str) -> Result<()> {
    if code.is_empty()
        || code.len() > 32
        || !code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::bad(
            "invalid_field",
            "code: use 1-32 letters, digits, '-' or '_'",
        ));
    }
    Ok(())
}

fn unique(result: rusqlite::Result<usize>, what: &str, code: &str) -> Result<i64> {
    match result {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(Error::conflict(
                "code_taken",
                format!("a {what} with code {code} already exists"),
            ))
        }
        other => {
            other?;
            Ok(0)
        }
    }
}

/// Adds a department.
pub fn add_department(conn: &Connection, code: &str, name: &str) -> Result<DepartmentId> {
    check_code(code)?;
    unique(
        conn.execute(
            "INSERT INTO departments (code, name) VALUES (?1, ?2)",
            params![code, name],
        ),
        "department",
        code,
    )?;
    Ok(conn.last_insert_rowid())
}

/// Adds a service point.
pub fn add_point(
    conn: &Connection,
    code: &str,
    name: &str,
    kind: PointKind,
    township: &str,
) -> Result<PointId> {
    check_code(code)?;
    unique(
        conn.execute(
            "INSERT INTO service_points (code, name, kind, township) VALUES (?1, ?2, ?3, ?4)",
            params![code, name, kind.as_str(), township],
        ),
        "service point",
        code,
    )?;
    Ok(conn.last_insert_rowid())
}

/// Adds a service item to a department's catalogue.
pub fn add_item(
    conn: &Connection,
    code: &str,
    name: &str,
    department_code: &str,
    required_materials: &[String],
    simple: bool,
) -> Result<i64> {
    check_code(code)?;
    let department = department_id(conn, department_code)?.ok_or_else(|| {
        Error::bad(
            "invalid_field",
            format!("department: no department with code {department_code}"),
        )
    })?;
    let materials =
        serde_json::to_string(required_materials).map_err(|e| Error::Internal(e.to_string()))?;
    unique(
        conn.execute(
            "INSERT INTO service_items (code, name, department_id, required_materials, simple) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![code, name, department, materials, simple],
        ),
        "service item",
        code,
    )?;
    Ok(conn.last_insert_rowid())
}

/// A department's id by code.
pub fn department_id(conn: &Connection, code: &str) -> Result<Option<DepartmentId>> {
    Ok(conn
        .query_row("SELECT id FROM departments WHERE code = ?1", [code], |r| {
            r.get(0)
        })
        .optional()?)
}

/// A service point's id by code.
pub fn point_id(conn: &Connection, code: &str) -> Result<Option<PointId>> {
    Ok(conn
        .query_row(
            "SELECT id FROM service_points WHERE code = ?1",
            [code],
            |r| r.get(0),
        )
        .optional()?)
}

/// A service item by code.
pub fn item_by_code(conn: &Connection, code: &str) -> Result<Option<ServiceItem>> {
    Ok(load(conn)?.items.into_iter().find(|i| i.code == code))
}

/// The whole catalogue.
pub fn load(conn: &Connection) -> Result<Catalogue> {
    let departments = conn
        .prepare("SELECT id, code, name FROM departments ORDER BY id")?
        .query_map([], |r| {
            Ok(Department {
                id: r.get(0)?,
                code: r.get(1)?,
                name: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let points = conn
        .prepare("SELECT id, code, name, kind, township FROM service_points ORDER BY id")?
        .query_map([], |r| {
            let kind: String = r.get(3)?;
            Ok(ServicePoint {
                id: r.get(0)?,
                code: r.get(1)?,
                name: r.get(2)?,
                kind: PointKind::parse(&kind).unwrap_or(PointKind::ServiceHall),
                township: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let items = conn
        .prepare("SELECT id, code, name, department_id, required_materials, simple FROM service_items ORDER BY id")?
        .query_map([], |r| {
            let materials: String = r.get(4)?;
            Ok(ServiceItem {
                id: r.get(0)?,
                code: r.get(1)?,
                name: r.get(2)?,
                department_id: r.get(3)?,
                required_materials: serde_json::from_str(&materials).unwrap_or_default(),
                simple: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Catalogue {
        departments,
        points,
        items,
    })
}
