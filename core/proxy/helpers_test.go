package proxy_test

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// sqlstate returns the SQLSTATE of a PostgreSQL error, or "".
func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}
