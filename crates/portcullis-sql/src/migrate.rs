//! The embedded migrations: SQL templates (`src/schema/`) rendered with the
//! backend's validated names, applied by sqlx's migrator with the crate's
//! own tracking table (never the application's `_sqlx_migrations`, whose
//! migrator would refuse versions it does not know). The same SQL rendered
//! with the default names is shipped in `migrations/` for teams that run
//! their own migration tool.

use std::borrow::Cow;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, SqlSafeStr as _};

use crate::names::Names;

/// Which database a template is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// One variant is unused when only one database's feature is on.
#[cfg_attr(not(all(feature = "postgres", feature = "sqlite")), allow(dead_code))]
pub(crate) enum Dialect {
    /// PostgreSQL (schema-qualified names).
    Postgres,
    /// SQLite (prefixed names, no schema).
    Sqlite,
}

/// One migration: a version, a description and its SQL for each dialect.
pub(crate) struct Template {
    pub(crate) version: i64,
    pub(crate) description: &'static str,
    pub(crate) postgres: &'static str,
    pub(crate) sqlite: &'static str,
}

/// Every migration, in order. Never edit a shipped one: add the next.
pub(crate) const TEMPLATES: [Template; 6] = [
    Template {
        version: 1,
        description: "sessions",
        postgres: include_str!("schema/postgres/0001_sessions.sql"),
        sqlite: include_str!("schema/sqlite/0001_sessions.sql"),
    },
    Template {
        version: 2,
        description: "refresh families",
        postgres: include_str!("schema/postgres/0002_refresh.sql"),
        sqlite: include_str!("schema/sqlite/0002_refresh.sql"),
    },
    Template {
        version: 3,
        description: "revocations",
        postgres: include_str!("schema/postgres/0003_revocations.sql"),
        sqlite: include_str!("schema/sqlite/0003_revocations.sql"),
    },
    Template {
        version: 5,
        description: "throttle",
        postgres: include_str!("schema/postgres/0005_throttle.sql"),
        sqlite: include_str!("schema/sqlite/0005_throttle.sql"),
    },
    Template {
        version: 6,
        description: "refresh dpop binding",
        postgres: include_str!("schema/postgres/0006_refresh_dpop_binding.sql"),
        sqlite: include_str!("schema/sqlite/0006_refresh_dpop_binding.sql"),
    },
    Template {
        version: 7,
        description: "dpop replay",
        postgres: include_str!("schema/postgres/0007_dpop_replay.sql"),
        sqlite: include_str!("schema/sqlite/0007_dpop_replay.sql"),
    },
];

/// The base name of the tracking table (`<prefix>migrations`).
pub(crate) const TRACKING_TABLE: &str = "migrations";

/// The file name a migration is shipped under in `migrations/<dialect>/`.
#[cfg(test)]
fn file_name(t: &Template) -> String {
    let slug: String = t
        .description
        .chars()
        .map(|c| if c == ' ' { '_' } else { c })
        .collect();
    format!("{:04}_{slug}.sql", t.version)
}

/// Every migration rendered with `names`.
pub(crate) fn rendered(names: &Names, dialect: Dialect) -> Vec<(i64, &'static str, String)> {
    TEMPLATES
        .iter()
        .map(|t| {
            let sql = match dialect {
                Dialect::Postgres => t.postgres,
                Dialect::Sqlite => t.sqlite,
            };
            (t.version, t.description, names.render(sql))
        })
        .collect()
}

/// The migrator for `names`: our migrations, our tracking table, and on
/// PostgreSQL the schema created first.
pub(crate) fn migrator(names: &Names, dialect: Dialect) -> Migrator {
    let migrations = rendered(names, dialect)
        .into_iter()
        .map(|(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                AssertSqlSafe(sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    if let (Dialect::Postgres, Some(schema)) = (dialect, names.schema()) {
        migrator.create_schema(format!("\"{schema}\""));
    }
    migrator.dangerous_set_table_name(names.table(TRACKING_TABLE));
    migrator
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQL shipped in `migrations/` is the templates rendered with the
    /// default names. `PORTCULLIS_BLESS=1 cargo test -p portcullis-sql
    /// --all-features shipped` rewrites it after a template changed.
    #[test]
    fn shipped_sql_is_the_rendered_templates() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let bless = std::env::var_os("PORTCULLIS_BLESS").is_some();
        for (dialect, dir, names) in [
            (
                Dialect::Postgres,
                "postgres",
                Names::new(Some("portcullis"), "").unwrap(),
            ),
            (
                Dialect::Sqlite,
                "sqlite",
                Names::new(None, "portcullis_").unwrap(),
            ),
        ] {
            for (t, (_, _, sql)) in TEMPLATES.iter().zip(rendered(&names, dialect)) {
                assert!(
                    !sql.contains("{table:") && !sql.contains("{ident:"),
                    "{sql}"
                );
                let path = root.join(dir).join(file_name(t));
                if bless {
                    std::fs::write(&path, &sql).unwrap();
                }
                let shipped = std::fs::read_to_string(&path).unwrap_or_default();
                assert_eq!(
                    shipped,
                    sql,
                    "{} is stale: rerun with PORTCULLIS_BLESS=1",
                    path.display()
                );
            }
        }
    }
}
