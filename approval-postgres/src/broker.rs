//! A credential broker for PostgreSQL: each approved call's body gets a
//! login role of its own with exactly the table privileges its template
//! names, for the tables its approved arguments name, valid until the
//! policy's lifetime ends; the role is dropped when the body ends.
//!
//! Every name that reaches SQL is quoted by the server (`format('%I')`),
//! after the table is looked up in the catalogue: an argument is a table
//! name or the call does not run. The role's password never leaves this
//! process in clear: the server is sent its SCRAM-SHA-256 verifier.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::Database;
use crate::connection::cause;
use approval_core::{
    BrokerError, CanonicalJson, Credential, CredentialBroker, CredentialHandle, MintRequest,
};

/// What every minted role's name starts with: `revoke` drops no other.
pub const ROLE_PREFIX: &str = "approval_";

/// A privilege on a table ([`RoleTemplate::grant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TablePrivilege {
    /// `SELECT`: read rows.
    Select,
    /// `INSERT`: add rows.
    Insert,
    /// `UPDATE`: change rows.
    Update,
    /// `DELETE`: remove rows.
    Delete,
}

impl TablePrivilege {
    fn sql(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// Where a grant's table comes from.
#[derive(Debug, Clone)]
enum TableFrom {
    /// The approved call's argument of this name (a string: `users` or
    /// `sales.orders`).
    Arg(String),
    /// Always this table.
    Fixed(String),
}

#[derive(Debug, Clone)]
struct TableGrant {
    privileges: Vec<TablePrivilege>,
    table: TableFrom,
}

/// What a minted role may do: privileges on tables named by the approved
/// arguments or fixed, in the schemas allowed.
///
/// ```
/// use approval_postgres::{RoleTemplate, TablePrivilege};
///
/// // Read the one table the call names, in the `public` or `sales` schema.
/// let export = RoleTemplate::new()
///     .grant([TablePrivilege::Select], "table")
///     .in_schemas(["public", "sales"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RoleTemplate {
    grants: Vec<TableGrant>,
    schemas: Option<Vec<String>>,
}

impl RoleTemplate {
    /// A template that grants nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants `privileges` on the table the call's argument `arg` names.
    #[must_use]
    pub fn grant(
        mut self,
        privileges: impl IntoIterator<Item = TablePrivilege>,
        arg: impl Into<String>,
    ) -> Self {
        self.grants.push(TableGrant {
            privileges: privileges.into_iter().collect(),
            table: TableFrom::Arg(arg.into()),
        });
        self
    }

    /// Grants `privileges` on `table`, whatever the arguments.
    #[must_use]
    pub fn grant_on(
        mut self,
        privileges: impl IntoIterator<Item = TablePrivilege>,
        table: impl Into<String>,
    ) -> Self {
        self.grants.push(TableGrant {
            privileges: privileges.into_iter().collect(),
            table: TableFrom::Fixed(table.into()),
        });
        self
    }

    /// Allows tables in these schemas only (by default any but the system
    /// catalogues, which are never allowed).
    #[must_use]
    pub fn in_schemas<S: Into<String>>(mut self, schemas: impl IntoIterator<Item = S>) -> Self {
        self.schemas = Some(schemas.into_iter().map(Into::into).collect());
        self
    }
}

/// Mints a PostgreSQL login role per approved call (see the module docs).
///
/// The broker's own connection string names a role with `CREATEROLE`
/// that holds, with grant option, the privileges its templates grant (the
/// tables' owner, or a superuser).
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use approval_core::Policy;
/// use approval_postgres::{Database, PostgresBroker, RoleTemplate, TablePrivilege};
///
/// let broker = PostgresBroker::new(Database::new("postgres://broker@db.internal/warehouse")?)
///     .template("read-table", RoleTemplate::new().grant([TablePrivilege::Select], "table"));
/// let policy = Policy::new("data-export", ["slack"], Duration::from_secs(900))
///     .credential("warehouse", "read-table", Duration::from_secs(600));
/// // Gate::builder(sink).broker("warehouse", Arc::new(broker)).policy(policy) ...
/// # Ok::<(), approval_postgres::DatabaseError>(())
/// ```
pub struct PostgresBroker {
    database: Database,
    templates: HashMap<String, RoleTemplate>,
}

impl fmt::Debug for PostgresBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.templates.keys().collect();
        names.sort();
        f.debug_struct("PostgresBroker")
            .field("database", &self.database)
            .field("templates", &names)
            .finish()
    }
}

/// A table as the catalogue names it.
struct Table {
    schema: String,
    name: String,
}

impl PostgresBroker {
    /// A broker minting roles in `database`, with no template yet.
    pub fn new(database: Database) -> Self {
        Self {
            database,
            templates: HashMap::new(),
        }
    }

    /// Adds a template under the name policies use.
    #[must_use]
    pub fn template(mut self, name: impl Into<String>, template: RoleTemplate) -> Self {
        self.templates.insert(name.into(), template);
        self
    }

    /// The table a grant names, looked up in the catalogue.
    async fn table(
        client: &tokio_postgres::Client,
        name: &str,
        template: &RoleTemplate,
        scope_error: &(dyn Fn(String) -> BrokerError + Sync),
    ) -> Result<Table, BrokerError> {
        // `to_regclass` resolves the name as SQL would (quoting, search
        // path) and gives NULL for no such table; the relation kinds are
        // tables, views and foreign tables.
        let row = client
            .query_opt(
                "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = pg_catalog.to_regclass($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                &[&name],
            )
            .await
            .map_err(|e| scope_error(format!("{name:?} is not a table name: {}", cause(&e))))?
            .ok_or_else(|| scope_error(format!("no table {name:?}")))?;
        let table = Table {
            schema: row.get(0),
            name: row.get(1),
        };
        let system = table.schema.starts_with("pg_") || table.schema == "information_schema";
        let allowed = template
            .schemas
            .as_ref()
            .is_none_or(|schemas| schemas.contains(&table.schema));
        if system || !allowed {
            return Err(scope_error(format!(
                "table {name:?} is in schema {}, which the template does not allow",
                table.schema
            )));
        }
        Ok(table)
    }
}

/// The role name for a request: the prefix and the request id, lower
/// case, letters and digits only, within PostgreSQL's 63 bytes.
fn role_name(request_id: &str) -> String {
    let mut name = String::from(ROLE_PREFIX);
    name.extend(
        request_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .take(63 - ROLE_PREFIX.len()),
    );
    name
}

/// The comment every minted role carries: `revoke` drops a role only if
/// it carries the comment for its request, so a log altered to name
/// another role cannot make the broker drop it.
fn marker(request_id: &str) -> String {
    format!("approval-rs credential for request {request_id}")
}

/// A password of 192 random bits, as letters and digits.
fn new_password() -> Result<String, BrokerError> {
    let mut bytes = [0u8; 24];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| BrokerError::Backend("the system random number generator failed".into()))?;
    Ok(approval_core::hex::encode(&bytes))
}

/// Runs the statement the server builds with `format()` from `args`, so
/// every identifier and literal in it is quoted by PostgreSQL itself.
async fn run_formatted(
    client: &tokio_postgres::Transaction<'_>,
    template: &str,
    args: &[&str],
) -> Result<(), tokio_postgres::Error> {
    let placeholders: Vec<String> = (2..=args.len() + 1)
        .map(|i| format!("${i}::text"))
        .collect();
    let build = format!("SELECT format($1::text, {})", placeholders.join(", "));
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&template];
    params.extend(
        args.iter()
            .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync)),
    );
    let statement: String = client.query_one(&build, &params).await?.get(0);
    client.batch_execute(&statement).await
}

fn backend(e: &tokio_postgres::Error) -> BrokerError {
    BrokerError::Backend(cause(e))
}

#[async_trait]
impl CredentialBroker for PostgresBroker {
    fn check_template(&self, template: &str) -> Result<(), BrokerError> {
        let found = self
            .templates
            .get(template)
            .ok_or_else(|| BrokerError::UnknownTemplate(template.to_owned()))?;
        if found.grants.is_empty() || found.grants.iter().any(|g| g.privileges.is_empty()) {
            return Err(BrokerError::Scope {
                template: template.to_owned(),
                why: "it grants nothing".into(),
            });
        }
        Ok(())
    }

    async fn mint(&self, request: MintRequest<'_>) -> Result<Credential, BrokerError> {
        let template = request.template_in(&self.templates)?;
        let args = request.args()?;
        let scope_error = |why: String| request.scope_error(why);
        let mut client = self
            .database
            .connect()
            .await
            .map_err(|e| BrokerError::Backend(e.to_string()))?;
        let mut grants = Vec::new();
        for grant in &template.grants {
            let name = match &grant.table {
                TableFrom::Fixed(name) => name.as_str(),
                TableFrom::Arg(arg) => args.get(arg).and_then(Value::as_str).ok_or_else(|| {
                    scope_error(format!("argument {arg} is not a recorded string"))
                })?,
            };
            let table = Self::table(&client, name, template, &scope_error).await?;
            grants.push((table, &grant.privileges));
        }
        let role = role_name(&request.request.id);
        let password = new_password()?;
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let until = approval_core::clock::format_ts(request.expires_at)
            .map_err(|e| BrokerError::Backend(e.to_string()))?;
        let until = String::from_utf8_lossy(&until).into_owned();
        // One transaction: a failure leaves no role behind.
        let tx = client.transaction().await.map_err(|e| backend(&e))?;
        run_formatted(
            &tx,
            "CREATE ROLE %I LOGIN NOINHERIT PASSWORD %L VALID UNTIL %L",
            &[&role, &verifier, &until],
        )
        .await
        .map_err(|e| backend(&e))?;
        run_formatted(
            &tx,
            "COMMENT ON ROLE %I IS %L",
            &[&role, &marker(&request.request.id)],
        )
        .await
        .map_err(|e| backend(&e))?;
        let mut scope = Vec::new();
        for (table, privileges) in &grants {
            let sql: Vec<&str> = privileges.iter().map(|p| p.sql()).collect();
            run_formatted(
                &tx,
                "GRANT USAGE ON SCHEMA %I TO %I",
                &[&table.schema, &role],
            )
            .await
            .map_err(|e| backend(&e))?;
            // The privileges are this crate's own words, not agent text.
            let grant = format!("GRANT {} ON TABLE %I.%I TO %I", sql.join(", "));
            run_formatted(&tx, &grant, &[&table.schema, &table.name, &role])
                .await
                .map_err(|e| backend(&e))?;
            scope.push(json!({
                "privileges": sql,
                "schema": table.schema,
                "table": table.name,
            }));
        }
        tx.commit().await.map_err(|e| backend(&e))?;
        let scope = CanonicalJson::from_value(&json!({"grants": scope, "role": role}))
            .map_err(|e| BrokerError::Backend(e.to_string()))?;
        Ok(Credential::new(role.clone(), scope, request.expires_at)
            .with_login(role)
            .with_secret("password", password))
    }

    async fn revoke(&self, credential: &CredentialHandle) -> Result<(), BrokerError> {
        let role = &credential.id;
        if !role.starts_with(ROLE_PREFIX) {
            return Err(BrokerError::Backend(format!(
                "{role} is not a role this broker mints; left alone"
            )));
        }
        let mut client = self
            .database
            .connect()
            .await
            .map_err(|e| BrokerError::Backend(e.to_string()))?;
        let row = client
            .query_opt(
                "SELECT pg_catalog.shobj_description(oid, 'pg_authid') FROM pg_catalog.pg_roles \
                 WHERE rolname = $1",
                &[role],
            )
            .await
            .map_err(|e| backend(&e))?;
        let Some(row) = row else {
            return Ok(()); // Already gone.
        };
        let comment: Option<String> = row.get(0);
        if comment.as_deref() != Some(marker(&credential.request_id).as_str()) {
            return Err(BrokerError::Backend(format!(
                "role {role} was not minted by this broker for request {}; left alone",
                credential.request_id
            )));
        }
        // No new login, then no session, then no role (and with it every
        // privilege granted to it in this database).
        let tx = client.transaction().await.map_err(|e| backend(&e))?;
        run_formatted(&tx, "ALTER ROLE %I NOLOGIN", &[role])
            .await
            .map_err(|e| backend(&e))?;
        tx.commit().await.map_err(|e| backend(&e))?;
        client
            .execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                 WHERE usename = $1",
                &[role],
            )
            .await
            .map_err(|e| backend(&e))?;
        let tx = client.transaction().await.map_err(|e| backend(&e))?;
        run_formatted(&tx, "DROP OWNED BY %I", &[role])
            .await
            .map_err(|e| backend(&e))?;
        run_formatted(&tx, "DROP ROLE %I", &[role])
            .await
            .map_err(|e| backend(&e))?;
        tx.commit().await.map_err(|e| backend(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_keep_letters_and_digits_within_postgres_limit() {
        assert_eq!(
            role_name("01J9ZC4Q7W3X5E8R2T6Y0U1I3O"),
            "approval_01j9zc4q7w3x5e8r2t6y0u1i3o"
        );
        assert_eq!(role_name("a\"; DROP ROLE x; --"), "approval_adroprolex");
        assert_eq!(role_name(&"x".repeat(100)).len(), 63);
    }
}
