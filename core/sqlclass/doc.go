// Package sqlclass classifies SQL statements for a transaction-pooling
// proxy: it tells which statements leave state behind on their server
// connection (so the client must be pinned to it), which change a run-time
// parameter the proxy can track and replay instead, and which only read.
//
// It is a scanner, not a parser. It follows the lexical rules of
// PostgreSQL 15 (https://www.postgresql.org/docs/15/sql-syntax-lexical.html)
// to skip comments (nested /* */ included), string constants ('...',
// E'...', U&'...', B'...', X'...', $$...$$, $tag$...$tag$) and quoted
// identifiers ("..."), splits a simple-query string on semicolons, and
// looks at a few key words of each statement. It runs on every simple Query
// message, so it allocates nothing for the common statement, never panics,
// and takes time linear in its input.
//
// # What the classifier reports
//
//   - SET [SESSION] name {TO | =} value, SET TIME ZONE, SET SCHEMA and SET
//     NAMES: SetParam (or ResetParam for DEFAULT); RESET name: ResetParam;
//     RESET ALL: ResetAll; DISCARD ALL: DiscardAll. SET LOCAL, SET
//     TRANSACTION and SET CONSTRAINTS have no effect on the session.
//   - Pins: SET ROLE, SET SESSION AUTHORIZATION, set_config(..., false) (and
//     UPDATE pg_settings, which calls it), SET name FROM CURRENT, SET
//     SESSION CHARACTERISTICS (as ReasonUnknown),
//     PREPARE, LISTEN, temporary tables, views and sequences (CREATE TEMP
//     ..., SELECT ... INTO TEMP, anything created in pg_temp) unless ON
//     COMMIT DROP, DECLARE ... WITH HOLD, session-level advisory locks, LOAD.
//   - Unpins: RESET ROLE / SET ROLE NONE, RESET SESSION AUTHORIZATION / SET
//     SESSION AUTHORIZATION DEFAULT, DEALLOCATE ALL, UNLISTEN *, DISCARD
//     TEMP, CLOSE ALL, pg_advisory_unlock_all().
//   - Text that ends inside an unterminated comment, string, quoted
//     identifier, dollar quote or BEGIN ATOMIC body, a SET or RESET that
//     does not parse or names a parameter with Unicode escapes (U&"..."),
//     and a call of a function named with Unicode escapes are pinned with
//     ReasonUnknown.
//
// Statements end at semicolons, except inside the BEGIN ATOMIC ... END body
// of CREATE FUNCTION and CREATE PROCEDURE, found much as psql finds it: at
// parenthesis depth 0, BEGIN ATOMIC opens a block, CASE inside a block opens
// another, END closes one. Since text can be crafted to look like a body to
// this count but not to the server, each statement of a body after the
// first is classified too, and one with effects (which the server refuses
// in a body) pins the CREATE with ReasonUnknown.
//
// Where PostgreSQL versions lex differently in a way that moves statement
// boundaries, the classifier takes the older reading: 1E'...' is a number
// followed by an escape string, as before version 15, which refuses it.
//
// # Limits
//
//   - Code that runs out of sight is not inspected: the bodies of functions,
//     procedures and DO blocks, the statement an EXECUTE runs, triggers,
//     rules and the query of REFRESH MATERIALIZED VIEW. A DO block or a
//     function can SET, LISTEN or take advisory locks unseen.
//   - Function calls are recognised by name (a word followed by an opening
//     parenthesis) outside strings and comments, whatever the schema; a user
//     function with the name of a built-in one is taken for it. They are
//     looked for in statements that evaluate expressions when they run
//     (SELECT, INSERT, UPDATE, DELETE, MERGE, VALUES, WITH, COPY, CALL,
//     EXECUTE, PREPARE, DECLARE, CREATE TABLE ... AS, CREATE MATERIALIZED
//     VIEW, EXPLAIN ANALYZE, unknown commands), not in definitions and
//     signatures (CREATE FUNCTION, CREATE VIEW, COMMENT ON FUNCTION, GRANT,
//     ALTER, DROP). A function the classifier does not know (a user
//     function, or one qualified with a schema other than pg_catalog) may
//     write: it makes its statement not read-only. A name followed by a
//     parenthesis that is a table alias's column list without AS (FROM
//     f() g(i)) is taken for such a call.
//   - Nothing is counted: pg_advisory_unlock(key), DEALLOCATE name,
//     UNLISTEN name, CLOSE name and DROP TABLE of a temporary table do not
//     unpin; only the forms that clear everything of a kind do
//     (pg_advisory_unlock_all(), DEALLOCATE ALL, UNLISTEN *, CLOSE ALL,
//     DISCARD TEMP, DISCARD ALL). pg_try_advisory_lock pins even when it
//     fails to lock.
//   - Text is lexed as with standard_conforming_strings on, the default
//     since PostgreSQL 9.1: a backslash in a '...' string is an ordinary
//     character. With it off, `'\'; LISTEN x; --'` is one string to the
//     server but a LISTEN to the classifier, and the other way round, so a
//     session on which it is off (see the server's ParameterStatus, or a
//     SetParam of "standard_conforming_strings") must not trust the
//     classifier: pin it.
//   - SET values are reported as written, not normalised: `'UTC'` and
//     `UTC` are different texts for the same value.
//   - The classifier does not know whether a statement succeeds; a pin or
//     parameter change reported for a statement that fails, or whose
//     transaction rolls back, is the session's to discard.
package sqlclass
