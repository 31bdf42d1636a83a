//! The schema and table names a backend's SQL is built from: validated when
//! the backend is built, quoted wherever they are spliced, and spliced only
//! here and in [`Names::render`], never from a request.

use std::fmt;

/// The longest table, index or tracking-table name the crate derives from a
/// prefix, without the prefix (`refresh_families_expiry` and the like fit).
const LONGEST_DERIVED: usize = 32;

/// PostgreSQL truncates identifiers past 63 bytes (`NAMEDATALEN - 1`).
const MAX_IDENT: usize = 63;

/// A schema name or table prefix that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The schema name is empty, too long (63 bytes at most), or not
    /// lower-case ASCII letters, digits and `_` starting with a letter or
    /// `_`.
    #[error("invalid schema name: 1 to 63 bytes of a-z, 0-9 and _, not starting with a digit")]
    Schema,
    /// The table prefix is too long (31 bytes at most, so that every name
    /// derived from it fits PostgreSQL's 63), or not lower-case ASCII
    /// letters, digits and `_` starting with a letter or `_`.
    #[error("invalid table prefix: at most 31 bytes of a-z, 0-9 and _, not starting with a digit")]
    Prefix,
}

/// Whether `s` is a name we splice (quoted) into SQL: `[a-z_][a-z0-9_]*`.
fn plain_ident(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Validated names: an optional schema (PostgreSQL) and a table prefix.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Names {
    schema: Option<String>,
    prefix: String,
}

impl fmt::Debug for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Names")
            .field("schema", &self.schema)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Names {
    /// Checks `schema` (when given) and `prefix`.
    pub(crate) fn new(schema: Option<&str>, prefix: &str) -> Result<Self, NameError> {
        if schema.is_some_and(|s| s.len() > MAX_IDENT || !plain_ident(s)) {
            return Err(NameError::Schema);
        }
        if prefix.len() + LONGEST_DERIVED > MAX_IDENT || !(prefix.is_empty() || plain_ident(prefix))
        {
            return Err(NameError::Prefix);
        }
        Ok(Self {
            schema: schema.map(str::to_owned),
            prefix: prefix.to_owned(),
        })
    }

    /// The schema, unquoted (PostgreSQL only).
    pub(crate) fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The prefix, unquoted (names the revocation channel and view).
    #[cfg(feature = "jwt")]
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `"<prefix><base>"`: an unqualified, quoted name (what `CREATE INDEX`
    /// takes for the index's own name).
    pub(crate) fn ident(&self, base: &str) -> String {
        debug_assert!(base.len() <= LONGEST_DERIVED && plain_ident(base));
        format!("\"{}{base}\"", self.prefix)
    }

    /// `"<schema>"."<prefix><base>"`, or `"<prefix><base>"` without a
    /// schema: a table as every statement names it.
    pub(crate) fn table(&self, base: &str) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".{}", self.ident(base)),
            None => self.ident(base),
        }
    }

    /// Replaces, in a SQL template, `{schema}` with the quoted schema,
    /// `{table:<base>}` with [`table`](Self::table) and `{ident:<base>}`
    /// with [`ident`](Self::ident); any other brace is kept as it is
    /// (`'{}'`). Templates are the crate's own constants.
    pub(crate) fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let token = &after[..end];
            match token.split_once(':') {
                Some(("table", base)) if plain_ident(base) => out.push_str(&self.table(base)),
                Some(("ident", base)) if plain_ident(base) => out.push_str(&self.ident(base)),
                None if token == "schema" => {
                    out.push('"');
                    out.push_str(self.schema.as_deref().unwrap_or_default());
                    out.push('"');
                }
                _ => {
                    // Not a placeholder (`'{}'`, a JSON literal): kept, and
                    // scanning resumes after the brace.
                    out.push('{');
                    rest = after;
                    continue;
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for (schema, prefix, ok) in [
            (Some("portcullis"), "", true),
            (Some("app_auth2"), "pc_", true),
            (Some("_x"), "_", true),
            (None, "portcullis_", true),
            (Some(""), "", false),
            (Some("Auth"), "", false),
            (Some("2fa"), "", false),
            (Some("a\"b"), "", false),
            (Some("a b"), "", false),
            (Some("auth;drop"), "", false),
            (Some("é"), "", false),
            (Some(&*"a".repeat(63)), "", true),
            (Some(&*"a".repeat(64)), "", false),
            (None, "x\"", false),
            (None, "x.y", false),
            (None, "9a", false),
            (None, &*"p".repeat(31), true),
            (None, &*"p".repeat(32), false),
        ] {
            assert_eq!(
                Names::new(schema, prefix).is_ok(),
                ok,
                "{schema:?} {prefix:?}"
            );
        }
    }

    #[test]
    fn templates_render_quoted_names() {
        let n = Names::new(Some("auth"), "pc_").unwrap();
        assert_eq!(
            n.render("CREATE INDEX {ident:sessions_user} ON {table:sessions} -- {schema} '{}' {x"),
            "CREATE INDEX \"pc_sessions_user\" ON \"auth\".\"pc_sessions\" -- \"auth\" '{}' {x"
        );
        assert_eq!(n.render("{{table:a}}"), "{\"auth\".\"pc_a\"}");
        let n = Names::new(None, "portcullis_").unwrap();
        assert_eq!(n.render("{table:sessions}"), "\"portcullis_sessions\"");
    }
}
