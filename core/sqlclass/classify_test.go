package sqlclass

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Helpers that keep the table below readable.

func st(cmd string, readOnly bool, effects ...Effect) Statement {
	if len(effects) == 0 {
		effects = nil
	}
	return Statement{Command: cmd, ReadOnly: readOnly, Effects: effects}
}

func ro(cmd string) Statement { return st(cmd, true) }
func rw(cmd string, effects ...Effect) Statement {
	return st(cmd, false, effects...)
}

func setp(name, value string) Effect { return Effect{Kind: SetParam, Name: name, Value: value} }
func resetp(name string) Effect      { return Effect{Kind: ResetParam, Name: name} }
func pin(r Reason) Effect            { return Effect{Kind: Pin, Reason: r} }
func unpin(r Reason) Effect          { return Effect{Kind: Unpin, Reason: r} }

var (
	resetAll   = Effect{Kind: ResetAll}
	discardAll = Effect{Kind: DiscardAll}
	unknown    = pin(ReasonUnknown)
)

// classifyCases are real statements (pgbench, ORMs, psql, pg_dump,
// migrations), every pin and unpin form, and tricky lexing, with the
// statements Classify must return for each.
var classifyCases = []struct {
	name string
	sql  string
	want []Statement
}{
	// pgbench: the built-in TPC-B-like script, -S, extended protocol, init.
	{"pgbench begin", "BEGIN;", []Statement{rw("BEGIN")}},
	{"pgbench update accounts", "UPDATE pgbench_accounts SET abalance = abalance + -4213 WHERE aid = 77311;", []Statement{rw("UPDATE")}},
	{"pgbench select", "SELECT abalance FROM pgbench_accounts WHERE aid = 77311;", []Statement{ro("SELECT")}},
	{"pgbench update tellers", "UPDATE pgbench_tellers SET tbalance = tbalance + -4213 WHERE tid = 7;", []Statement{rw("UPDATE")}},
	{"pgbench update branches", "UPDATE pgbench_branches SET bbalance = bbalance + -4213 WHERE bid = 1;", []Statement{rw("UPDATE")}},
	{"pgbench insert history", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 77311, -4213, CURRENT_TIMESTAMP);", []Statement{rw("INSERT")}},
	{"pgbench end", "END;", []Statement{rw("COMMIT")}},
	{"pgbench extended select", "SELECT abalance FROM pgbench_accounts WHERE aid = $1", []Statement{ro("SELECT")}},
	{"pgbench init drop", "drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers", []Statement{rw("DROP TABLE")}},
	{"pgbench init create", "create table pgbench_history(tid int,bid int,aid    int,delta int,mtime timestamp,filler char(22))", []Statement{rw("CREATE TABLE")}},
	{"pgbench init truncate", "truncate table pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers", []Statement{rw("TRUNCATE TABLE")}},
	{"pgbench init copy", "copy pgbench_accounts from stdin with (freeze on)", []Statement{rw("COPY")}},
	{"pgbench init generate", "insert into pgbench_tellers(tid,bid,tbalance) select tid, (tid - 1) / 10 + 1, 0 from generate_series(1, 10) as tid", []Statement{rw("INSERT")}},
	{"pgbench init vacuum", "vacuum analyze pgbench_branches", []Statement{rw("VACUUM")}},
	{"pgbench init primary key", "alter table pgbench_branches add primary key (bid)", []Statement{rw("ALTER TABLE")}},

	// Rails / ActiveRecord.
	{"rails find", `SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2`, []Statement{ro("SELECT")}},
	{"rails exists", `SELECT 1 AS one FROM "users" WHERE "users"."email" = $1 LIMIT $2`, []Statement{ro("SELECT")}},
	{"rails insert", `INSERT INTO "users" ("name", "created_at", "updated_at") VALUES ($1, $2, $3) RETURNING "id"`, []Statement{rw("INSERT")}},
	{"rails update", `UPDATE "users" SET "name" = $1, "updated_at" = $2 WHERE "users"."id" = $3`, []Statement{rw("UPDATE")}},
	{"rails delete", `DELETE FROM "users" WHERE "users"."id" = $1`, []Statement{rw("DELETE")}},
	{"rails lock", `SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2 FOR UPDATE`, []Statement{rw("SELECT")}},
	{"rails client_min_messages", "SET client_min_messages TO 'warning'", []Statement{rw("SET", setp("client_min_messages", "'warning'"))}},
	{"rails standard_conforming_strings", "SET standard_conforming_strings = on", []Statement{rw("SET", setp("standard_conforming_strings", "on"))}},
	{"rails intervalstyle", "SET intervalstyle = iso_8601", []Statement{rw("SET", setp("intervalstyle", "iso_8601"))}},
	{"rails session timezone", "SET SESSION timezone TO 'UTC'", []Statement{rw("SET", setp("timezone", "'UTC'"))}},
	{"rails migration lock", "SELECT pg_try_advisory_lock(1553213233920462000)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"rails migration unlock", "SELECT pg_advisory_unlock(1553213233920462000)", []Statement{rw("SELECT")}},
	{"rails schema_migrations", `SELECT "schema_migrations"."version" FROM "schema_migrations" ORDER BY "schema_migrations"."version" ASC`, []Statement{ro("SELECT")}},
	{"rails type map", "SELECT t.oid, t.typname FROM pg_type as t WHERE t.typname IN ('int2', 'int4', 'int8', 'oid', 'float4', 'float8', 'bool')", []Statement{ro("SELECT")}},
	{"rails savepoint", "SAVEPOINT active_record_1", []Statement{rw("SAVEPOINT")}},
	{"rails release", "RELEASE SAVEPOINT active_record_1", []Statement{rw("RELEASE")}},
	{"rails rollback to", "ROLLBACK TO SAVEPOINT active_record_1", []Statement{rw("ROLLBACK")}},

	// Django.
	{"django login", `SELECT "auth_user"."id", "auth_user"."password", "auth_user"."last_login" FROM "auth_user" WHERE "auth_user"."username" = 'admin' LIMIT 21`, []Statement{ro("SELECT")}},
	{"django time zone", "SET TIME ZONE 'UTC'", []Statement{rw("SET", setp("timezone", "'UTC'"))}},
	{"django select_for_update nowait", `SELECT "shop_order"."id" FROM "shop_order" WHERE "shop_order"."id" = 3 FOR UPDATE NOWAIT`, []Statement{rw("SELECT")}},
	{"django skip locked", `SELECT "q_job"."id" FROM "q_job" ORDER BY "q_job"."id" ASC LIMIT 1 FOR UPDATE SKIP LOCKED`, []Statement{rw("SELECT")}},
	{"django no key update", `SELECT "shop_order"."id" FROM "shop_order" WHERE "shop_order"."id" = 3 FOR NO KEY UPDATE OF "shop_order"`, []Statement{rw("SELECT")}},
	{"django migrations", `SELECT "django_migrations"."id", "django_migrations"."app", "django_migrations"."name" FROM "django_migrations"`, []Statement{ro("SELECT")}},
	{"django create migrations table", `CREATE TABLE "django_migrations" ("id" bigint NOT NULL PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY, "app" varchar(255) NOT NULL, "name" varchar(255) NOT NULL, "applied" timestamp with time zone NOT NULL)`, []Statement{rw("CREATE TABLE")}},
	{"django introspection", `SELECT c.relname, CASE WHEN c.relispartition THEN 'p' WHEN c.relkind IN ('m', 'v') THEN 'v' ELSE 't' END, obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('f', 'm', 'p', 'r', 'v') AND n.nspname NOT IN ('pg_catalog', 'pg_toast') AND pg_catalog.pg_table_is_visible(c.oid)`, []Statement{ro("SELECT")}},
	{"django reset sequences", `SELECT setval(pg_get_serial_sequence('"shop_item"','id'), coalesce(max("id"), 1), max("id") IS NOT null) FROM "shop_item";`, []Statement{rw("SELECT")}},
	{"django constraints", "SET CONSTRAINTS ALL IMMEDIATE", []Statement{rw("SET")}},
	{"django deferred", "SET CONSTRAINTS ALL DEFERRED", []Statement{rw("SET")}},

	// Hibernate and the JDBC driver.
	{"hibernate select", "select u1_0.id,u1_0.email,u1_0.name from users u1_0 where u1_0.id=$1", []Statement{ro("SELECT")}},
	{"hibernate sequence", "select nextval('users_seq')", []Statement{rw("SELECT")}},
	{"hibernate insert", "insert into users (email,name,id) values ($1,$2,$3)", []Statement{rw("INSERT")}},
	{"hibernate versioned update", "update users set email=$1,name=$2,version=$3 where id=$4 and version=$5", []Statement{rw("UPDATE")}},
	{"hibernate pessimistic", "select u1_0.id from users u1_0 where u1_0.id=$1 for no key update", []Statement{rw("SELECT")}},
	{"spring data like escape", `select u1_0.id from users u1_0 where u1_0.name like $1 escape '\'`, []Statement{ro("SELECT")}},
	{"jdbc extra_float_digits", "SET extra_float_digits = 3", []Statement{rw("SET", setp("extra_float_digits", "3"))}},
	{"jdbc application_name", "SET application_name = 'PostgreSQL JDBC Driver'", []Statement{rw("SET", setp("application_name", "'PostgreSQL JDBC Driver'"))}},
	{"jdbc session characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", []Statement{rw("SET", unknown)}},

	// SQLAlchemy / psycopg.
	{"sqlalchemy version", "select pg_catalog.version()", []Statement{ro("SELECT")}},
	{"sqlalchemy current_schema", "select current_schema()", []Statement{ro("SELECT")}},
	{"sqlalchemy show", "show standard_conforming_strings", []Statement{ro("SHOW")}},
	{"sqlalchemy ping", "SELECT 1", []Statement{ro("SELECT")}},
	{"sqlalchemy has_table", `SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class JOIN pg_catalog.pg_namespace ON pg_catalog.pg_namespace.oid = pg_catalog.pg_class.relnamespace WHERE pg_catalog.pg_class.relname = 'users' AND pg_catalog.pg_class.relkind = ANY (ARRAY['r', 'p', 'f', 'v', 'm']) AND pg_catalog.pg_table_is_visible(pg_catalog.pg_class.oid) AND pg_catalog.pg_namespace.nspname != 'pg_catalog'`, []Statement{ro("SELECT")}},
	{"sqlalchemy insert returning", "INSERT INTO users (name, fullname) VALUES ('spongebob', 'Spongebob Squarepants') RETURNING users.id", []Statement{rw("INSERT")}},
	{"sqlalchemy like", "SELECT users.id FROM users WHERE (users.name LIKE '%' || 'a' || '%' ESCAPE '/')", []Statement{ro("SELECT")}},

	// Prisma.
	{"prisma find", `SELECT "public"."User"."id", "public"."User"."email" FROM "public"."User" WHERE ("public"."User"."email" = $1 AND 1=1) LIMIT $2 OFFSET $3`, []Statement{ro("SELECT")}},
	{"prisma create", `INSERT INTO "public"."User" ("email","name") VALUES ($1,$2) RETURNING "public"."User"."id"`, []Statement{rw("INSERT")}},
	{"prisma migrate lock", "SELECT pg_advisory_lock(72707369)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"prisma migrate unlock", "SELECT pg_advisory_unlock(72707369)", []Statement{rw("SELECT")}},
	{"prisma isolation", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", []Statement{rw("SET")}},

	// psql.
	{"psql describe lookup", `SELECT c.oid, n.nspname, c.relname FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname OPERATOR(pg_catalog.~) '^(users)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 2, 3;`, []Statement{ro("SELECT")}},
	{"psql describe columns", `SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true) FROM pg_catalog.pg_attrdef d WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef), a.attnotnull FROM pg_catalog.pg_attribute a WHERE a.attrelid = '16384' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum;`, []Statement{ro("SELECT")}},
	{"psql list relations", `SELECT n.nspname as "Schema", c.relname as "Name", CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' END as "Type", pg_catalog.pg_get_userbyid(c.relowner) as "Owner" FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','v','m','S','f','') AND n.nspname <> 'pg_catalog' AND n.nspname !~ '^pg_toast' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1,2;`, []Statement{ro("SELECT")}},
	{"psql list databases", `SELECT d.datname as "Name", pg_catalog.array_to_string(d.datacl, E'\n') AS "Access privileges" FROM pg_catalog.pg_database d ORDER BY 1;`, []Statement{ro("SELECT")}},
	{"psql tab completion", "SELECT pg_catalog.quote_ident(c.relname) FROM pg_catalog.pg_class c WHERE c.relkind IN ('r', 'S', 'v', 'm', 'f', 'p') AND substring(pg_catalog.quote_ident(c.relname),1,3)='pgb' AND pg_catalog.pg_table_is_visible(c.oid) LIMIT 1000", []Statement{ro("SELECT")}},

	// pg_dump output, one simple query.
	{"pg_dump preamble", "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\nSET check_function_bodies = false;\nSET xmloption = content;\nSET client_min_messages = warning;\nSET row_security = off;\nSET default_tablespace = '';\n", []Statement{
		rw("SET", setp("statement_timeout", "0")),
		rw("SET", setp("lock_timeout", "0")),
		rw("SET", setp("client_encoding", "'UTF8'")),
		rw("SET", setp("standard_conforming_strings", "on")),
		rw("SELECT", pin(ReasonSetConfig)),
		rw("SET", setp("check_function_bodies", "false")),
		rw("SET", setp("xmloption", "content")),
		rw("SET", setp("client_min_messages", "warning")),
		rw("SET", setp("row_security", "off")),
		rw("SET", setp("default_tablespace", "''")),
	}},
	{"pg_dump trigger function", "CREATE FUNCTION public.touch() RETURNS trigger\n    LANGUAGE plpgsql\n    AS $$\nBEGIN\n  NEW.updated_at := now();\n  LISTEN never_seen;\n  RETURN NEW;\nEND;\n$$;", []Statement{rw("CREATE FUNCTION")}},
	{"pg_dump sequence", "CREATE SEQUENCE public.users_id_seq AS integer START WITH 1 INCREMENT BY 1 NO MINVALUE NO MAXVALUE CACHE 1;", []Statement{rw("CREATE SEQUENCE")}},
	{"pg_dump owned by", "ALTER SEQUENCE public.users_id_seq OWNED BY public.users.id;", []Statement{rw("ALTER SEQUENCE")}},
	{"pg_dump setval", "SELECT pg_catalog.setval('public.users_id_seq', 42, true);", []Statement{rw("SELECT")}},
	{"pg_dump primary key", "ALTER TABLE ONLY public.users ADD CONSTRAINT users_pkey PRIMARY KEY (id);", []Statement{rw("ALTER TABLE")}},
	{"pg_dump comment", "COMMENT ON EXTENSION plpgsql IS 'PL/pgSQL procedural language';", []Statement{rw("COMMENT")}},

	// Migrations and administration.
	{"create index concurrently", "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_users_email ON users (lower(email))", []Statement{rw("CREATE INDEX")}},
	{"create unique index", "create unique index users_email_key on users using btree (email)", []Statement{rw("CREATE INDEX")}},
	{"add column", "ALTER TABLE users ADD COLUMN age integer DEFAULT 0 NOT NULL", []Statement{rw("ALTER TABLE")}},
	{"column default nextval", "ALTER TABLE users ALTER COLUMN id SET DEFAULT nextval('users_id_seq'::regclass)", []Statement{rw("ALTER TABLE")}},
	{"create extension", `CREATE EXTENSION IF NOT EXISTS "uuid-ossp"`, []Statement{rw("CREATE EXTENSION")}},
	{"create view", "CREATE OR REPLACE VIEW active_users AS SELECT * FROM users WHERE active", []Statement{rw("CREATE VIEW")}},
	{"create view calling lock", "CREATE VIEW locker AS SELECT pg_advisory_lock(1)", []Statement{rw("CREATE VIEW")}},
	{"create materialized view", "CREATE MATERIALIZED VIEW daily AS SELECT date_trunc('day', created_at) d, count(*) FROM orders GROUP BY 1", []Statement{rw("CREATE MATERIALIZED VIEW")}},
	{"refresh materialized view", "REFRESH MATERIALIZED VIEW CONCURRENTLY daily", []Statement{rw("REFRESH MATERIALIZED VIEW")}},
	{"drop index", "DROP INDEX CONCURRENTLY IF EXISTS idx_users_email", []Statement{rw("DROP INDEX")}},
	{"create type", "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')", []Statement{rw("CREATE TYPE")}},
	{"alter type", "ALTER TYPE mood ADD VALUE 'great'", []Statement{rw("ALTER TYPE")}},
	{"create schema", "CREATE SCHEMA IF NOT EXISTS app AUTHORIZATION app", []Statement{rw("CREATE SCHEMA")}},
	{"grant", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO readonly", []Statement{rw("GRANT")}},
	{"revoke on set_config", "REVOKE ALL ON FUNCTION set_config(text, text, boolean) FROM PUBLIC", []Statement{rw("REVOKE")}},
	{"comment on advisory function", "COMMENT ON FUNCTION pg_advisory_lock(bigint) IS 'takes a lock'", []Statement{rw("COMMENT")}},
	{"create trigger", "CREATE TRIGGER users_touch BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION touch()", []Statement{rw("CREATE TRIGGER")}},
	{"create constraint trigger", "CREATE CONSTRAINT TRIGGER check_it AFTER INSERT ON t DEFERRABLE FOR EACH ROW EXECUTE FUNCTION check_it()", []Statement{rw("CREATE TRIGGER")}},
	{"create policy", "CREATE POLICY tenant ON orders USING (tenant_id = current_setting('app.tenant_id')::int)", []Statement{rw("CREATE POLICY")}},
	{"default privileges", "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO readonly", []Statement{rw("ALTER DEFAULT PRIVILEGES")}},
	{"foreign data wrapper", "CREATE FOREIGN DATA WRAPPER dummy", []Statement{rw("CREATE FOREIGN DATA WRAPPER")}},
	{"foreign table", "create foreign table ft (a int) server s", []Statement{rw("CREATE FOREIGN TABLE")}},
	{"text search", "CREATE TEXT SEARCH CONFIGURATION my_english (COPY = english)", []Statement{rw("CREATE TEXT SEARCH CONFIGURATION")}},
	{"user mapping", "drop user mapping for bob server s", []Statement{rw("DROP USER MAPPING")}},
	{"drop owned", "DROP OWNED BY old_app", []Statement{rw("DROP OWNED")}},
	{"alter user", "ALTER USER bob WITH PASSWORD 'secret'", []Statement{rw("ALTER ROLE")}},
	{"create user", "CREATE USER app LOGIN", []Statement{rw("CREATE ROLE")}},
	{"alter role set", "ALTER ROLE app SET search_path = app, public", []Statement{rw("ALTER ROLE")}},
	{"alter database set", "ALTER DATABASE app SET timezone TO 'UTC'", []Statement{rw("ALTER DATABASE")}},
	{"alter system", "ALTER SYSTEM SET work_mem = '64MB'", []Statement{rw("ALTER SYSTEM")}},
	{"begin atomic", "CREATE OR REPLACE FUNCTION one() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; LISTEN after_it", []Statement{rw("CREATE FUNCTION"), rw("LISTEN", pin(ReasonListen))}},
	{"procedure begin atomic", "CREATE PROCEDURE ins() LANGUAGE sql BEGIN ATOMIC INSERT INTO t VALUES (1); INSERT INTO t VALUES (2); END; CALL ins()", []Statement{rw("CREATE PROCEDURE"), rw("CALL")}},
	{"begin atomic as column and alias", "CREATE FUNCTION f() RETURNS SETOF int LANGUAGE sql BEGIN ATOMIC SELECT begin atomic FROM t; END; SET ROLE admin; SELECT CASE WHEN true THEN 1 END; END; SELECT 1", []Statement{rw("CREATE FUNCTION", unknown), ro("SELECT")}},
	{"option value begin", "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = begin AS 'select 1'; SET ROLE admin", []Statement{rw("CREATE FUNCTION"), rw("SET", pin(ReasonSetRole))}},
	{"begin atomic after option", "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = begin BEGIN ATOMIC SELECT 1; END; LISTEN x", []Statement{rw("CREATE FUNCTION"), rw("LISTEN", pin(ReasonListen))}},
	{"begin atomic body with effects", "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT pg_advisory_lock(1); END", []Statement{rw("CREATE FUNCTION", unknown)}},
	{"begin atomic empty statements", "CREATE PROCEDURE p() LANGUAGE sql BEGIN ATOMIC ; ; INSERT INTO t VALUES (1); ; END ; ; NOTIFY x", []Statement{rw("CREATE PROCEDURE"), rw("NOTIFY")}},
	{"unclosed begin atomic", "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1;", []Statement{rw("CREATE FUNCTION", unknown)}},
	{"do block", "DO $$BEGIN PERFORM pg_advisory_lock(1); EXECUTE 'LISTEN x'; END$$", []Statement{rw("DO")}},
	{"do block tagged", "DO $do$ BEGIN RAISE NOTICE 'hi'; END $do$;", []Statement{rw("DO")}},
	{"call", "CALL refresh_stats(now())", []Statement{rw("CALL")}},
	{"analyze", "ANALYZE users", []Statement{rw("ANALYZE")}},
	{"analyse", "analyse verbose users", []Statement{rw("ANALYZE")}},
	{"vacuum options", "VACUUM (VERBOSE, ANALYZE) users", []Statement{rw("VACUUM")}},
	{"cluster", "CLUSTER users USING users_pkey", []Statement{rw("CLUSTER")}},
	{"reindex", "REINDEX TABLE CONCURRENTLY users", []Statement{rw("REINDEX")}},
	{"checkpoint", "CHECKPOINT", []Statement{rw("CHECKPOINT")}},
	{"lock table", "LOCK TABLE users IN ACCESS EXCLUSIVE MODE", []Statement{rw("LOCK TABLE")}},
	{"security label", "SECURITY LABEL FOR selinux ON TABLE t IS 'system_u:object_r:sepgsql_table_t:s0'", []Statement{rw("SECURITY LABEL")}},
	{"import foreign schema", "IMPORT FOREIGN SCHEMA remote FROM SERVER s INTO local", []Statement{rw("IMPORT FOREIGN SCHEMA")}},
	{"unknown command", "FROBNICATE the_table", []Statement{rw("FROBNICATE")}},

	// SET and RESET.
	{"set search_path to", "SET search_path TO myschema, public", []Statement{rw("SET", setp("search_path", "myschema, public"))}},
	{"set search_path user", `set search_path = "$user", public`, []Statement{rw("SET", setp("search_path", `"$user", public`))}},
	{"set to default", "SET search_path TO DEFAULT", []Statement{rw("SET", resetp("search_path"))}},
	{"set = default lower", "set search_path = default", []Statement{rw("SET", resetp("search_path"))}},
	{"set quoted default", "SET search_path = 'default'", []Statement{rw("SET", setp("search_path", "'default'"))}},
	{"set session", "SET SESSION search_path TO app", []Statement{rw("SET", setp("search_path", "app"))}},
	{"set local", "SET LOCAL search_path TO app", []Statement{rw("SET")}},
	{"set local timeout", "SET LOCAL statement_timeout = '5s'", []Statement{rw("SET")}},
	{"set quoted name", `SET "TimeZone" = 'UTC'`, []Statement{rw("SET", setp("timezone", "'UTC'"))}},
	{"set mixed case name", "SET TimeZone TO 'Europe/Paris'", []Statement{rw("SET", setp("timezone", "'Europe/Paris'"))}},
	{"set mixed case keywords", "SeT SeArCh_PaTh To a", []Statement{rw("SET", setp("search_path", "a"))}},
	{"set time zone name", "SET TIME ZONE 'America/New_York'", []Statement{rw("SET", setp("timezone", "'America/New_York'"))}},
	{"set time zone local", "set time zone local", []Statement{rw("SET", resetp("timezone"))}},
	{"set time zone default", "SET TIME ZONE DEFAULT", []Statement{rw("SET", resetp("timezone"))}},
	{"set time zone interval", "SET TIME ZONE INTERVAL '+02:00' HOUR TO MINUTE", []Statement{rw("SET", setp("timezone", "INTERVAL '+02:00' HOUR TO MINUTE"))}},
	{"set session time zone", "SET SESSION TIME ZONE -7", []Statement{rw("SET", setp("timezone", "-7"))}},
	{"set schema", "SET SCHEMA 'app'", []Statement{rw("SET", setp("search_path", "'app'"))}},
	{"set names", "SET NAMES 'UTF8'", []Statement{rw("SET", setp("client_encoding", "'UTF8'"))}},
	{"set names default", "SET NAMES DEFAULT", []Statement{rw("SET", resetp("client_encoding"))}},
	{"set xml option", "SET XML OPTION DOCUMENT", []Statement{rw("SET", setp("xmloption", "DOCUMENT"))}},
	{"set custom", "SET app.tenant_id = '42'", []Statement{rw("SET", setp("app.tenant_id", "'42'"))}},
	{"set custom quoted", `SET "App"."Tenant" = 7`, []Statement{rw("SET", setp("app.tenant", "7"))}},
	{"set custom named local", "SET local.flag = on", []Statement{rw("SET", setp("local.flag", "on"))}},
	{"set two", "SET work_mem = '64MB'; SET maintenance_work_mem TO 1048576", []Statement{rw("SET", setp("work_mem", "'64MB'")), rw("SET", setp("maintenance_work_mem", "1048576"))}},
	{"set trailing comment", "SET statement_timeout TO 5000 /* ms */", []Statement{rw("SET", setp("statement_timeout", "5000"))}},
	{"set trailing line comment", "SET statement_timeout = '1s' -- per request\n", []Statement{rw("SET", setp("statement_timeout", "'1s'"))}},
	{"set spaces", "SET  search_path  =  a ,  b  ;", []Statement{rw("SET", setp("search_path", "a ,  b"))}},
	{"set comments between", "SET/**/search_path/**/=/**/a", []Statement{rw("SET", setp("search_path", "a"))}},
	{"set leading comment", "-- per-request setting\nSET search_path = tenant_7", []Statement{rw("SET", setp("search_path", "tenant_7"))}},
	{"set unicode name", `SET U&"\0072ole" TO admin`, []Statement{rw("SET", unknown)}},
	{"reset unicode name", `RESET app.U&"x"`, []Statement{rw("RESET", unknown)}},
	{"set from current", "SET search_path FROM CURRENT", []Statement{rw("SET", pin(ReasonSetFromCurrent))}},
	{"set transaction", "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", []Statement{rw("SET")}},
	{"set transaction snapshot", "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", []Statement{rw("SET")}},
	{"set without value", "SET search_path TO", []Statement{rw("SET", unknown)}},
	{"set without operator", "SET foo", []Statement{rw("SET", unknown)}},
	{"set nothing", "SET", []Statement{rw("SET", unknown)}},
	{"set from garbage", "SET search_path FROM elsewhere", []Statement{rw("SET", unknown)}},
	{"reset", "RESET search_path", []Statement{rw("RESET", resetp("search_path"))}},
	{"reset all", "RESET ALL", []Statement{rw("RESET", resetAll)}},
	{"reset all lower", "reset all;", []Statement{rw("RESET", resetAll)}},
	{"reset time zone", "RESET TIME ZONE", []Statement{rw("RESET", resetp("timezone"))}},
	{"reset quoted", `RESET "TimeZone"`, []Statement{rw("RESET", resetp("timezone"))}},
	{"reset custom", "RESET app.tenant_id", []Statement{rw("RESET", resetp("app.tenant_id"))}},
	{"reset transaction", "RESET TRANSACTION ISOLATION LEVEL", []Statement{rw("RESET")}},
	{"reset garbage", "RESET search_path extra", []Statement{rw("RESET", unknown)}},

	// Roles and session authorization.
	{"set role", "SET ROLE admin", []Statement{rw("SET", pin(ReasonSetRole))}},
	{"set role quoted", "SET ROLE 'admin'", []Statement{rw("SET", pin(ReasonSetRole))}},
	{"set role none", "set role none", []Statement{rw("SET", unpin(ReasonSetRole))}},
	{"set role 'none'", "SET ROLE 'none'", []Statement{rw("SET", unpin(ReasonSetRole))}},
	{"set role to", "SET role TO admin", []Statement{rw("SET", pin(ReasonSetRole))}},
	{"set role = default", "SET role = DEFAULT", []Statement{rw("SET", unpin(ReasonSetRole))}},
	{"set session role", "SET SESSION ROLE admin", []Statement{rw("SET", pin(ReasonSetRole))}},
	{"set local role", "SET LOCAL ROLE admin", []Statement{rw("SET")}},
	{"reset role", "RESET ROLE", []Statement{rw("RESET", unpin(ReasonSetRole))}},
	{"reset role quoted", `RESET "role"`, []Statement{rw("RESET", unpin(ReasonSetRole))}},
	{"session authorization", "SET SESSION AUTHORIZATION 'alice'", []Statement{rw("SET", pin(ReasonSessionAuthorization), unpin(ReasonSetRole))}},
	{"session authorization default", "SET SESSION AUTHORIZATION DEFAULT", []Statement{rw("SET", unpin(ReasonSessionAuthorization), unpin(ReasonSetRole))}},
	{"session session authorization", "SET SESSION SESSION AUTHORIZATION bob", []Statement{rw("SET", pin(ReasonSessionAuthorization), unpin(ReasonSetRole))}},
	{"session_authorization parameter", "SET session_authorization = bob", []Statement{rw("SET", pin(ReasonSessionAuthorization), unpin(ReasonSetRole))}},
	{"reset session authorization", "RESET SESSION AUTHORIZATION", []Statement{rw("RESET", unpin(ReasonSessionAuthorization), unpin(ReasonSetRole))}},
	{"local session authorization", "SET LOCAL SESSION AUTHORIZATION bob", []Statement{rw("SET")}},

	// DISCARD.
	{"discard all", "DISCARD ALL", []Statement{rw("DISCARD", discardAll)}},
	{"discard temp", "DISCARD TEMP", []Statement{rw("DISCARD", unpin(ReasonTempObject))}},
	{"discard temporary", "discard temporary;", []Statement{rw("DISCARD", unpin(ReasonTempObject))}},
	{"discard plans", "DISCARD PLANS", []Statement{rw("DISCARD")}},
	{"discard sequences", "DISCARD SEQUENCES", []Statement{rw("DISCARD")}},
	{"discard garbage", "DISCARD EVERYTHING", []Statement{rw("DISCARD", unknown)}},

	// PREPARE and friends.
	{"prepare", "PREPARE get_user (int) AS SELECT * FROM users WHERE id = $1", []Statement{rw("PREPARE", pin(ReasonPrepare))}},
	{"prepare lower", "prepare q2 as select 1", []Statement{rw("PREPARE", pin(ReasonPrepare))}},
	{"prepare named transaction", "PREPARE transaction AS SELECT 1", []Statement{rw("PREPARE", pin(ReasonPrepare))}},
	{"prepare transaction", "PREPARE TRANSACTION 'gid-1'", []Statement{rw("PREPARE TRANSACTION")}},
	{"commit prepared", "COMMIT PREPARED 'gid-1'", []Statement{rw("COMMIT PREPARED")}},
	{"rollback prepared", "ROLLBACK PREPARED 'gid-1'", []Statement{rw("ROLLBACK PREPARED")}},
	{"execute", "EXECUTE get_user(5)", []Statement{rw("EXECUTE")}},
	{"deallocate", "DEALLOCATE get_user", []Statement{rw("DEALLOCATE")}},
	{"deallocate prepare", "DEALLOCATE PREPARE get_user", []Statement{rw("DEALLOCATE")}},
	{"deallocate all", "DEALLOCATE ALL", []Statement{rw("DEALLOCATE", unpin(ReasonPrepare))}},
	{"deallocate prepare all", "deallocate prepare all", []Statement{rw("DEALLOCATE", unpin(ReasonPrepare))}},
	{"deallocate quoted all", `DEALLOCATE "all"`, []Statement{rw("DEALLOCATE")}},

	// LISTEN / NOTIFY.
	{"listen", "LISTEN jobs", []Statement{rw("LISTEN", pin(ReasonListen))}},
	{"listen quoted mixed case", `LiStEn  "Jobs"`, []Statement{rw("LISTEN", pin(ReasonListen))}},
	{"unlisten one", "UNLISTEN jobs", []Statement{rw("UNLISTEN")}},
	{"unlisten all", "UNLISTEN *", []Statement{rw("UNLISTEN", unpin(ReasonListen))}},
	{"notify", "NOTIFY jobs, 'payload; with semicolon'", []Statement{rw("NOTIFY")}},
	{"pg_notify", "SELECT pg_notify('jobs', 'payload')", []Statement{rw("SELECT")}},

	// Temporary objects.
	{"create temp table", "CREATE TEMP TABLE t (id int)", []Statement{rw("CREATE TEMP TABLE", pin(ReasonTempObject))}},
	{"create temporary table", "CREATE TEMPORARY TABLE IF NOT EXISTS t (id int)", []Statement{rw("CREATE TEMP TABLE", pin(ReasonTempObject))}},
	{"create global temporary", "create global temporary table t (id int)", []Statement{rw("CREATE TEMP TABLE", pin(ReasonTempObject))}},
	{"create local temp as", "CREATE LOCAL TEMP TABLE t AS SELECT * FROM users", []Statement{rw("CREATE TEMP TABLE", pin(ReasonTempObject))}},
	{"temp on commit drop", "CREATE TEMP TABLE t (id int) ON COMMIT DROP", []Statement{rw("CREATE TEMP TABLE")}},
	{"temp on commit drop as", "CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1 AS id", []Statement{rw("CREATE TEMP TABLE")}},
	{"temp on commit delete rows", "CREATE TEMP TABLE t (id int) ON COMMIT DELETE ROWS", []Statement{rw("CREATE TEMP TABLE", pin(ReasonTempObject))}},
	{"temp on commit preserve rows", "CREATE TEMP TABLE t (id int) ON COMMIT PRESERVE ROWS", []Statement{rw("CREATE TEMP TABLE", pin(ReasonTempObject))}},
	{"temp view", "CREATE TEMP VIEW v AS SELECT 1", []Statement{rw("CREATE TEMP VIEW", pin(ReasonTempObject))}},
	{"or replace temp view", "CREATE OR REPLACE TEMP VIEW v AS SELECT 1", []Statement{rw("CREATE TEMP VIEW", pin(ReasonTempObject))}},
	{"temp recursive view", "CREATE TEMP RECURSIVE VIEW nums (n) AS VALUES (1) UNION ALL SELECT n + 1 FROM nums WHERE n < 5", []Statement{rw("CREATE TEMP VIEW", pin(ReasonTempObject))}},
	{"temp sequence", "CREATE TEMPORARY SEQUENCE s", []Statement{rw("CREATE TEMP SEQUENCE", pin(ReasonTempObject))}},
	{"pg_temp table", "CREATE TABLE pg_temp.t (id int)", []Statement{rw("CREATE TABLE", pin(ReasonTempObject))}},
	{"pg_temp upper", "CREATE TABLE PG_TEMP.t (id int)", []Statement{rw("CREATE TABLE", pin(ReasonTempObject))}},
	{"pg_temp quoted", `create table "pg_temp".t (id int)`, []Statement{rw("CREATE TABLE", pin(ReasonTempObject))}},
	{"pg_temp_3", "CREATE TABLE pg_temp_3.t (id int)", []Statement{rw("CREATE TABLE", pin(ReasonTempObject))}},
	{"pg_temp function", "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'", []Statement{rw("CREATE FUNCTION", pin(ReasonTempObject))}},
	{"pg_temp on commit drop", "CREATE TABLE pg_temp.t (id int) ON COMMIT DROP", []Statement{rw("CREATE TABLE")}},
	{"view on pg_temp table", "CREATE VIEW v AS SELECT * FROM pg_temp.t", []Statement{rw("CREATE VIEW", pin(ReasonTempObject))}},
	{"pg_temporal is not pg_temp", "CREATE TABLE pg_temporal.t (id int)", []Statement{rw("CREATE TABLE")}},
	{"table named temp", "CREATE TABLE temp (id int)", []Statement{rw("CREATE TABLE")}},
	{"unlogged table", "CREATE UNLOGGED TABLE t (id int)", []Statement{rw("CREATE TABLE")}},
	{"select into temp", "SELECT * INTO TEMP t FROM users", []Statement{rw("SELECT", pin(ReasonTempObject))}},
	{"select into temporary table", "SELECT * INTO TEMPORARY TABLE t FROM users", []Statement{rw("SELECT", pin(ReasonTempObject))}},
	{"select into local temp", "SELECT 1 AS a INTO LOCAL TEMP t", []Statement{rw("SELECT", pin(ReasonTempObject))}},
	{"select into pg_temp", "SELECT 1 AS a INTO pg_temp.t", []Statement{rw("SELECT", pin(ReasonTempObject))}},
	{"select into table", "SELECT * INTO archive FROM users", []Statement{rw("SELECT")}},
	{"select into table named temp", "SELECT 1 AS a INTO temp", []Statement{rw("SELECT")}},
	{"insert into table named temp", "INSERT INTO temp VALUES (1)", []Statement{rw("INSERT")}},
	{"with select into temp", "WITH x AS (SELECT 1 AS a) SELECT * INTO TEMP t FROM x", []Statement{rw("WITH", pin(ReasonTempObject))}},

	// Cursors.
	{"declare with hold", "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM users", []Statement{rw("DECLARE", pin(ReasonCursorWithHold))}},
	{"declare options with hold", "declare c binary no scroll cursor with hold for select 1", []Statement{rw("DECLARE", pin(ReasonCursorWithHold))}},
	{"declare without hold", "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1", []Statement{rw("DECLARE")}},
	{"declare plain", "DECLARE c SCROLL CURSOR FOR SELECT * FROM users", []Statement{rw("DECLARE")}},
	{"declare cte named hold", "DECLARE c CURSOR FOR WITH hold AS (SELECT 1) SELECT * FROM hold", []Statement{rw("DECLARE")}},
	{"declare quoted name", `DECLARE "with" INSENSITIVE CURSOR WITH HOLD FOR SELECT 1`, []Statement{rw("DECLARE", pin(ReasonCursorWithHold))}},
	{"fetch", "FETCH 100 FROM c", []Statement{rw("FETCH")}},
	{"move", "MOVE FORWARD 5 IN c", []Statement{rw("MOVE")}},
	{"close", "CLOSE c", []Statement{rw("CLOSE")}},
	{"close all", "CLOSE ALL", []Statement{rw("CLOSE", unpin(ReasonCursorWithHold))}},

	// Advisory locks.
	{"advisory lock", "SELECT pg_advisory_lock(42)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"advisory lock qualified", "SELECT pg_catalog.pg_advisory_lock(42)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"advisory lock shared upper", "select PG_ADVISORY_LOCK_SHARED(1, 2)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"try advisory lock shared", "SELECT pg_try_advisory_lock_shared(42)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"advisory lock space", "SELECT pg_advisory_lock (42)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"advisory lock comment", "SELECT pg_advisory_lock/* why not */(42)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"advisory lock quoted", `SELECT "pg_advisory_lock"(42)`, []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"advisory lock quoted upper", `SELECT "PG_ADVISORY_LOCK"(42)`, []Statement{rw("SELECT")}}, // another function, unknown
	{"unicode function name", `SELECT U&"\0073et_config"('role', 'admin', false)`, []Statement{rw("SELECT", unknown)}},
	{"advisory xact lock", "SELECT pg_advisory_xact_lock(42)", []Statement{rw("SELECT")}},
	{"try advisory xact lock", "SELECT pg_try_advisory_xact_lock_shared(42)", []Statement{rw("SELECT")}},
	{"advisory unlock all", "SELECT pg_advisory_unlock_all()", []Statement{rw("SELECT", unpin(ReasonAdvisoryLock))}},
	{"advisory in string", "SELECT 'pg_advisory_lock(1)'", []Statement{ro("SELECT")}},
	{"advisory in comment", "SELECT 1 -- pg_advisory_lock(1)", []Statement{ro("SELECT")}},
	{"advisory column", "SELECT pg_advisory_lock_id FROM locks", []Statement{ro("SELECT")}},
	{"advisory lock twice", "SELECT pg_advisory_lock(1), pg_advisory_lock(2)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock))}},
	{"advisory lock unlock lock", "SELECT pg_advisory_lock(1), pg_advisory_unlock_all(), pg_advisory_lock(2)", []Statement{rw("SELECT", pin(ReasonAdvisoryLock), unpin(ReasonAdvisoryLock), pin(ReasonAdvisoryLock))}},
	{"advisory lock in update", "UPDATE jobs SET locked = pg_try_advisory_lock(id) WHERE id = 1", []Statement{rw("UPDATE", pin(ReasonAdvisoryLock))}},
	{"advisory lock then unlock", "SELECT pg_advisory_lock(1); SELECT pg_advisory_unlock_all()", []Statement{rw("SELECT", pin(ReasonAdvisoryLock)), rw("SELECT", unpin(ReasonAdvisoryLock))}},

	// set_config.
	{"set_config session", "SELECT set_config('search_path', 'app', false)", []Statement{rw("SELECT", pin(ReasonSetConfig))}},
	{"set_config local", "SELECT set_config('search_path', 'app', true)", []Statement{rw("SELECT")}},
	{"set_config local upper", "select set_config('app.user', $1, TRUE)", []Statement{rw("SELECT")}},
	{"set_config quoted true", "SELECT set_config('a', 'b', 'true')", []Statement{rw("SELECT", pin(ReasonSetConfig))}},
	{"set_config parameter", "SELECT set_config('a', 'b', $1)", []Statement{rw("SELECT", pin(ReasonSetConfig))}},
	{"set_config nested commas", "SELECT set_config('a', concat('x', 'y'), true)", []Statement{rw("SELECT")}},
	{"set_config expression", "SELECT set_config('a', 'b', NOT false)", []Statement{rw("SELECT", pin(ReasonSetConfig))}},
	{"set_config two arguments", "SELECT set_config('a', 'b')", []Statement{rw("SELECT", pin(ReasonSetConfig))}},
	{"set_config subquery", "SELECT set_config('app.user', (SELECT id::text FROM users WHERE email = $1), true)", []Statement{rw("SELECT")}},
	{"update pg_settings", "UPDATE pg_settings SET setting = 'app, public' WHERE name = 'search_path'", []Statement{rw("UPDATE", pin(ReasonSetConfig))}},
	{"select pg_settings", "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = 'search_path'", []Statement{ro("SELECT")}},
	{"current_setting", "SELECT current_setting('app.user')", []Statement{ro("SELECT")}},

	// LOAD.
	{"load", "LOAD 'auto_explain'", []Statement{rw("LOAD", pin(ReasonLoad))}},
	{"load libdir", "load '$libdir/plugins/auto_explain';", []Statement{rw("LOAD", pin(ReasonLoad))}},

	// Reading and writing.
	{"values", "VALUES (1, 'one'), (2, 'two')", []Statement{ro("VALUES")}},
	{"table", "TABLE users", []Statement{ro("TABLE")}},
	{"show", "SHOW search_path", []Statement{ro("SHOW")}},
	{"show all", "SHOW ALL", []Statement{ro("SHOW")}},
	{"explain", "EXPLAIN SELECT * FROM users", []Statement{ro("EXPLAIN")}},
	{"explain analyze buffers", "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM users", []Statement{rw("EXPLAIN")}},
	{"explain analyze", "EXPLAIN ANALYZE SELECT 1", []Statement{rw("EXPLAIN")}},
	{"explain analyze false", "EXPLAIN (ANALYZE false) SELECT 1", []Statement{ro("EXPLAIN")}},
	{"explain analyze off", "explain (analyze off, costs off) select 1", []Statement{ro("EXPLAIN")}},
	{"explain analyze on", "EXPLAIN (COSTS OFF, ANALYZE on) SELECT 1", []Statement{rw("EXPLAIN")}},
	{"explain format", "EXPLAIN (FORMAT JSON) SELECT 1", []Statement{ro("EXPLAIN")}},
	{"explain verbose", "EXPLAIN VERBOSE SELECT 1", []Statement{ro("EXPLAIN")}},
	{"explain update", "EXPLAIN UPDATE users SET name = 'x'", []Statement{rw("EXPLAIN")}},
	{"explain analyze lock", "EXPLAIN ANALYZE SELECT pg_advisory_lock(1)", []Statement{rw("EXPLAIN", pin(ReasonAdvisoryLock))}},
	{"explain lock not run", "EXPLAIN SELECT pg_advisory_lock(1)", []Statement{rw("EXPLAIN")}},
	{"explain analyze create temp", "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", []Statement{rw("EXPLAIN", pin(ReasonTempObject))}},
	{"explain create temp not run", "EXPLAIN CREATE TEMP TABLE t AS SELECT 1", []Statement{rw("EXPLAIN")}},
	{"for share", "SELECT * FROM t FOR SHARE", []Statement{rw("SELECT")}},
	{"for key share", "SELECT * FROM t FOR KEY SHARE SKIP LOCKED", []Statement{rw("SELECT")}},
	{"for update of nowait", "select * from t for update of t nowait", []Statement{rw("SELECT")}},
	{"substring for", "SELECT substring('abcdef' FROM 1 FOR 2)", []Statement{ro("SELECT")}},
	{"with select", "WITH x AS (SELECT 1) SELECT * FROM x", []Statement{ro("WITH")}},
	{"with delete", "WITH d AS (DELETE FROM t WHERE old RETURNING *) SELECT * FROM d", []Statement{rw("WITH")}},
	{"with update", "WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM u", []Statement{rw("WITH")}},
	{"with insert", "WITH i AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM i", []Statement{rw("WITH")}},
	{"with main insert", "WITH m AS MATERIALIZED (SELECT 1 AS a) INSERT INTO t SELECT a FROM m", []Statement{rw("WITH")}},
	{"with recursive", "WITH RECURSIVE r(n) AS (VALUES (1) UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT n FROM r", []Statement{ro("WITH")}},
	{"merge", "MERGE INTO stock s USING delta d ON s.item = d.item WHEN MATCHED THEN UPDATE SET qty = s.qty + d.qty WHEN NOT MATCHED THEN INSERT VALUES (d.item, d.qty)", []Statement{rw("MERGE")}},
	{"parenthesised union", "(SELECT 1) UNION ALL (SELECT 2)", []Statement{ro("SELECT")}},
	{"double parentheses", "((SELECT 1))", []Statement{ro("SELECT")}},
	{"nextval", "SELECT nextval('users_id_seq')", []Statement{rw("SELECT")}},
	{"currval", "SELECT currval('users_id_seq')", []Statement{rw("SELECT")}}, // needs the session that called nextval
	{"txid_current", "SELECT txid_current()", []Statement{rw("SELECT")}},
	{"pg_current_xact_id", "SELECT pg_current_xact_id()", []Statement{rw("SELECT")}},
	{"lo_import", "SELECT lo_import('/tmp/photo.png')", []Statement{rw("SELECT")}},
	{"lo_unlink", "SELECT lo_unlink(16433)", []Statement{rw("SELECT")}},
	{"aggregates", "SELECT now(), count(*), coalesce(max(id), 0) FROM users", []Statement{ro("SELECT")}},
	{"unknown function", "SELECT my_volatile_function()", []Statement{rw("SELECT")}}, // it may write
	{"generate_series", "SELECT * FROM generate_series(1, 10)", []Statement{ro("SELECT")}},

	// What may be sent to a replica: a function the classifier does not
	// know may write; only built-ins it knows, and pg_catalog's, read.
	{"unknown function in from", "SELECT * FROM my_set_returning_function(1)", []Statement{rw("SELECT")}},
	{"unknown function in where", "SELECT id FROM t WHERE check_and_log(id)", []Statement{rw("SELECT")}},
	{"schema-qualified unknown", "SELECT app.now()", []Statement{rw("SELECT")}},
	{"schema-qualified known name", "SELECT public.count(*) FROM t", []Statement{rw("SELECT")}},
	{"quoted mixed-case function", `SELECT "LogAccess"(1)`, []Statement{rw("SELECT")}},
	{"pg_catalog function", "SELECT pg_catalog.pg_get_functiondef(1), pg_catalog.pg_is_in_recovery()", []Statement{ro("SELECT")}},
	{"quoted pg_catalog", `SELECT "pg_catalog".pg_relation_filenode(1)`, []Statement{ro("SELECT")}},
	{"pg_catalog writer", "SELECT pg_catalog.nextval('s')", []Statement{rw("SELECT")}},
	{"current wal lsn", "SELECT pg_catalog.pg_current_wal_lsn()", []Statement{rw("SELECT")}}, // fails on a replica
	{"lastval", "SELECT lastval()", []Statement{rw("SELECT")}},
	{"select for update with function", "SELECT lower(name) FROM t FOR UPDATE", []Statement{rw("SELECT")}},
	{"known functions", "SELECT upper(a), length(b), to_char(c, 'YYYY'), date_trunc('day', d), jsonb_build_object('a', 1), array_agg(e) FILTER (WHERE e > 0), row_number() OVER (PARTITION BY f) FROM t WHERE g IN (1, 2) AND EXISTS (SELECT 1) AND h = ANY (ARRAY[1])", []Statement{ro("SELECT")}},
	{"type modifiers", "SELECT a::numeric(10, 2), CAST(b AS varchar(20)), c::timestamp(3), d::character varying(5)", []Statement{ro("SELECT")}},
	{"alias column list", "SELECT * FROM generate_series(1, 3) AS g(i) JOIN (VALUES (1)) AS v(n) ON g.i = v.n", []Statement{ro("SELECT")}},
	{"cte column list", "WITH t(a, b) AS (SELECT 1, 2) SELECT a FROM t", []Statement{ro("WITH")}},
	{"alias without as", "SELECT * FROM generate_series(1, 3) g(i)", []Statement{rw("SELECT")}}, // taken for a call: sent to the writer
	{"subquery in from", "SELECT x FROM (SELECT 1 AS x) s WHERE x IN (SELECT 1)", []Statement{ro("SELECT")}},
	{"is in recovery", "SELECT pg_catalog.pg_is_in_recovery(), count(*) FROM t", []Statement{ro("SELECT")}},
	{"explain unknown function", "EXPLAIN SELECT my_function()", []Statement{rw("EXPLAIN")}},
	{"quoted keyword column", `SELECT "update", "delete" FROM t`, []Statement{ro("SELECT")}},
	{"keyword in string", "SELECT 'DELETE FROM t; LISTEN x'", []Statement{ro("SELECT")}},
	{"keyword in dollar quote", "SELECT $$INSERT INTO t$$", []Statement{ro("SELECT")}},
	{"keyword in comment", "SELECT 1 /* FOR UPDATE */", []Statement{ro("SELECT")}},

	// Transactions.
	{"begin isolation", "begin transaction isolation level serializable", []Statement{rw("BEGIN")}},
	{"start transaction", "START TRANSACTION READ ONLY", []Statement{ro("START TRANSACTION")}},
	{"start transaction read write", "START TRANSACTION", []Statement{rw("START TRANSACTION")}},
	{"begin read only", "BEGIN READ ONLY", []Statement{ro("BEGIN")}},
	{"begin transaction modes", "begin transaction isolation level repeatable read, read only, deferrable", []Statement{ro("BEGIN")}},
	{"begin read committed", "BEGIN ISOLATION LEVEL READ COMMITTED", []Statement{rw("BEGIN")}},
	{"begin read only then read write", "BEGIN READ ONLY, READ WRITE", []Statement{rw("BEGIN")}},
	{"begin read write", "BEGIN WORK READ WRITE", []Statement{rw("BEGIN")}},
	{"read only transaction in one query", "BEGIN READ ONLY; SELECT 1; COMMIT", []Statement{ro("BEGIN"), ro("SELECT"), rw("COMMIT")}},
	{"commit", "COMMIT", []Statement{rw("COMMIT")}},
	{"commit and chain", "commit and chain", []Statement{rw("COMMIT")}},
	{"rollback", "ROLLBACK", []Statement{rw("ROLLBACK")}},
	{"abort", "ABORT", []Statement{rw("ROLLBACK")}},
	{"savepoint rollback", "SAVEPOINT s1; ROLLBACK TO s1; RELEASE s1", []Statement{rw("SAVEPOINT"), rw("ROLLBACK"), rw("RELEASE")}},
	{"transaction in one query", "BEGIN; SET LOCAL statement_timeout = 0; SELECT 1; COMMIT;", []Statement{rw("BEGIN"), rw("SET"), ro("SELECT"), rw("COMMIT")}},

	// Lexing.
	{"semicolon in string and identifier", `SELECT 'a;b'; SELECT "c;d" FROM t`, []Statement{ro("SELECT"), ro("SELECT")}},
	{"doubled quote", "SELECT 'it''s; fine'; LISTEN x", []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"escape string quote", `SELECT E'it\'s; LISTEN x'`, []Statement{ro("SELECT")}},
	{"escape string lower", `SELECT e'it\'s; LISTEN x'`, []Statement{ro("SELECT")}},
	{"escape string backslash", `SELECT E'\\'; LISTEN x`, []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"escape string doubled quote", `SELECT E'a''b\\'; LISTEN x`, []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"standard string backslash", `SELECT 'C:\'; LISTEN x`, []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"identifier ending in e", `SELECT 1 AS thE'x'`, []Statement{ro("SELECT")}},
	{"number before escape string", `SELECT 1E'\''; LISTEN x; --'`, []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"nested comments", "SELECT /* outer /* inner; LISTEN x */ still; LISTEN y */ 1; LISTEN z", []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"comment slash star slash", "SELECT /*/ LISTEN x; */ 1", []Statement{ro("SELECT")}},
	{"operator before comment", "SELECT 2*/**/3; SELECT 4--5\n", []Statement{ro("SELECT"), ro("SELECT")}},
	{"dollar quote", "SELECT $$ ; LISTEN x $$; SELECT 2", []Statement{ro("SELECT"), ro("SELECT")}},
	{"dollar quote tag", "SELECT $tag$ $$ ; LISTEN x $tag$; SELECT 2", []Statement{ro("SELECT"), ro("SELECT")}},
	{"dollar quotes nested", "SELECT $a$ $b$ ; $b$ $a$", []Statement{ro("SELECT")}},
	{"dollar quote tag case", "SELECT $A$ $a$; LISTEN x $A$", []Statement{ro("SELECT")}},
	{"parameters", "SELECT $1, $2; LISTEN x", []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"parameter then dollar", "SELECT $1$$; LISTEN x$$", []Statement{ro("SELECT")}},
	{"identifier with dollars", "SELECT 1 AS a$$b; LISTEN x", []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"unicode string", `SELECT U&'\0041; LISTEN x' UESCAPE '\'; SELECT 1`, []Statement{ro("SELECT"), ro("SELECT")}},
	{"unicode identifier", `SELECT U&"a;b" FROM t`, []Statement{ro("SELECT")}},
	{"bit and hex strings", "SELECT B'1010', X'FF;'", []Statement{ro("SELECT")}},
	{"national string", "SELECT N'national; text'", []Statement{ro("SELECT")}},
	{"line comment", "SELECT 1 -- comment ; LISTEN x\n; SELECT 2", []Statement{ro("SELECT"), ro("SELECT")}},
	{"line comment carriage return", "SELECT 1 -- comment\r; LISTEN x", []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"whitespace", "SELECT\t1\r\n;\fLISTEN\tx", []Statement{ro("SELECT"), rw("LISTEN", pin(ReasonListen))}},
	{"leading comment", "/* app:web controller:users */ SELECT 1", []Statement{ro("SELECT")}},
	{"mixed case", "sElEcT 1", []Statement{ro("SELECT")}},
	{"plpgsql body", "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN LISTEN x; RETURN 1; END $$; SELECT f()", []Statement{rw("CREATE FUNCTION"), rw("SELECT")}},
	{"semicolons in everything", "SELECT 1 FROM t WHERE a = 'x;' /* ; */ AND b = $$;$$ AND \"c;\" = E'\\';'", []Statement{ro("SELECT")}},

	// Empty and incomplete text.
	{"empty", "", nil},
	{"only spaces", "  \n\t ", nil},
	{"only a comment", "-- only a comment", nil},
	{"only semicolons", "/* only */ ; ; ;", nil},
	{"empty statements", ";;SELECT 1;;", []Statement{ro("SELECT")}},
	{"unterminated string", "SELECT 'unterminated", []Statement{rw("SELECT", unknown)}},
	{"unterminated identifier", `SELECT "unterminated`, []Statement{rw("SELECT", unknown)}},
	{"unterminated dollar quote", "SELECT $$unterminated", []Statement{rw("SELECT", unknown)}},
	{"unterminated comment", "SELECT /* unterminated", []Statement{rw("SELECT", unknown)}},
	{"unterminated nested comment", "SELECT /* a /* b */ still open", []Statement{rw("SELECT", unknown)}},
	{"unterminated escape string", `SELECT E'unterminated\'`, []Statement{rw("SELECT", unknown)}},
	{"unterminated after statement", "SELECT 1; /* unterminated", []Statement{ro("SELECT"), rw("", unknown)}},
	{"unterminated hides listen", "LISTEN a; SELECT 'x; LISTEN b", []Statement{rw("LISTEN", pin(ReasonListen)), rw("SELECT", unknown)}},
	{"not a command", "(1)", []Statement{rw("", unknown)}},
	{"string first", "'just a string'", []Statement{rw("", unknown)}},
}

func TestClassify(t *testing.T) {
	statements := 0
	for _, tc := range classifyCases {
		statements += len(tc.want)
		t.Run(tc.name, func(t *testing.T) {
			got := Classify(nil, tc.sql)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Classify(%q)\n got %s\nwant %s", tc.sql, format(got), format(tc.want))
			}
		})
	}
	if statements < 150 {
		t.Errorf("the table holds %d statements, want at least 150", statements)
	}
	t.Logf("%d cases, %d statements", len(classifyCases), statements)
}

// TestClassifyOneStatement checks that each single statement of the table
// classifies the same on its own as within the simple query.
func TestClassifyOneStatement(t *testing.T) {
	for _, tc := range classifyCases {
		if len(tc.want) != 1 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			if got := ClassifyOne(tc.sql); !reflect.DeepEqual(got, tc.want[0]) {
				t.Errorf("ClassifyOne(%q)\n got %s\nwant %s", tc.sql, format([]Statement{got}), format(tc.want))
			}
		})
	}
}

func TestClassifyOne(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want Statement
	}{
		{"", Statement{}},
		{" -- nothing\n", Statement{}},
		{"SELECT 1;", ro("SELECT")},
		{"; SELECT 1", ro("SELECT")},
		{"LISTEN x", rw("LISTEN", pin(ReasonListen))},
		{"SELECT 1; SELECT 2", rw("SELECT", unknown)},
		{"SELECT 1; /* open", rw("SELECT", unknown)},
		{"/* open", rw("", unknown)},
	} {
		if got := ClassifyOne(tc.sql); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ClassifyOne(%q)\n got %s\nwant %s", tc.sql, format([]Statement{got}), format([]Statement{tc.want}))
		}
	}
}

// TestClassifyAppends checks that Classify appends to dst and reuses its
// capacity.
func TestClassifyAppends(t *testing.T) {
	dst := make([]Statement, 1, 8)
	dst[0] = ro("KEEP")
	got := Classify(dst, "SELECT 1; LISTEN x")
	want := []Statement{ro("KEEP"), ro("SELECT"), rw("LISTEN", pin(ReasonListen))}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %s, want %s", format(got), format(want))
	}
	if &got[0] != &dst[0] {
		t.Error("Classify did not reuse the capacity of dst")
	}
}

// TestClassifyDoesNotAllocate checks the hot path: common statements,
// classified into a reused slice, allocate nothing.
func TestClassifyDoesNotAllocate(t *testing.T) {
	for _, sql := range []string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
		"UPDATE pgbench_accounts SET abalance = abalance + -4213 WHERE aid = 77311;",
		"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 77311, -4213, CURRENT_TIMESTAMP);",
		`SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2`,
		"BEGIN; SELECT 1; COMMIT",
		"select u1_0.id,u1_0.email from users u1_0 where u1_0.name like $1 escape '\\'",
		"CREATE TABLE t (id int)",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; SELECT 3; END",
	} {
		dst := Classify(nil, sql)
		if n := testing.AllocsPerRun(100, func() { dst = Classify(dst[:0], sql) }); n != 0 {
			t.Errorf("Classify(%q) allocates %v times, want 0", sql, n)
		}
	}
}

// TestEffectsAliasInput checks that names and values already written in
// canonical form are slices of the input rather than copies.
func TestEffectsAliasInput(t *testing.T) {
	sql := "SET search_path TO app, public"
	e := ClassifyOne(sql).Effects[0]
	if !strings.Contains(sql, e.Name) || !strings.Contains(sql, e.Value) {
		t.Fatalf("unexpected effect %v", e)
	}
	if n := testing.AllocsPerRun(100, func() { ClassifyOne(sql) }); n > 1 {
		t.Errorf("ClassifyOne(%q) allocates %v times, want at most 1 (the effects)", sql, n)
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{ReasonSetRole.String(), "SET ROLE"},
		{ReasonAdvisoryLock.String(), "session-level advisory lock"},
		{ReasonUnknown.String(), "statement the classifier cannot understand"},
		{Reason(0).String(), "none"},
		{Reason(200).String(), "Reason(200)"},
		{SetParam.String(), "SetParam"},
		{EffectKind(0).String(), "EffectKind(0)"},
		{setp("timezone", "'UTC'").String(), "SET timezone = 'UTC'"},
		{resetp("timezone").String(), "RESET timezone"},
		{pin(ReasonListen).String(), "Pin LISTEN"},
		{resetAll.String(), "ResetAll"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for r := Reason(1); r.Valid(); r++ {
		if s := r.String(); strings.HasPrefix(s, "Reason(") {
			t.Errorf("reason %d has no text", r)
		}
	}
}

// format renders statements for failure messages.
func format(sts []Statement) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range sts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("{" + strconv.Quote(s.Command))
		if s.ReadOnly {
			b.WriteString(" ro")
		}
		for _, e := range s.Effects {
			b.WriteString(" <" + e.String() + ">")
		}
		if s.Effects != nil && len(s.Effects) == 0 {
			b.WriteString(" <empty, not nil>")
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.String()
}
