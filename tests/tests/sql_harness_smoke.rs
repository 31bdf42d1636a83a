//! The PostgreSQL harness itself: a server starts as root or not, takes
//! connections from sqlx, stops cleanly, restarts on its port, and counts
//! statements.

use portcullis_sql::sqlx;
use portcullis_tests::pg_harness::PgServer;

#[tokio::test]
async fn a_throwaway_server_serves_sqlx_and_survives_a_restart() {
    let mut server = PgServer::start();
    let url = server.fresh_database();
    let db = PgServer::database_of(&url).to_owned();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect(&url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (x bigint)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&pool)
        .await
        .unwrap();
    server.reset_statement_stats(&db);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let stats = server.statement_stats(&db);
    assert!(
        stats.iter().any(|(c, q)| *c == 1 && q.contains("count(*)")),
        "{stats:?}"
    );
    server.stop();
    assert!(sqlx::query("SELECT 1").execute(&pool).await.is_err());
    server.restart();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 1, "a clean stop keeps committed rows");
}
