// Command readwrite is a Sluice filter that splits reads from writes: a
// read-only statement outside a transaction, and a read-only transaction,
// go to a replica; everything else goes to the writer. A statement carrying
// the hint comment /* sluice:writer */ goes to the writer whatever it is.
package main

import (
	"errors"
	"strings"

	"github.com/sluicedb/sluice/sdk"
)

// readWrite is the filter. Its only state is its configuration, the same
// on every instance.
type readWrite struct{}

// hint is the comment that sends a statement to the writer. It is looked
// for in the first hintWindow bytes only, so that the filter's cost does
// not grow with a long statement (a bulk INSERT).
var hint = "/* sluice:writer */"

const hintWindow = 1024

// config is the filter's JSON configuration.
type config struct {
	// Hint replaces the writer hint comment.
	Hint *string `json:"hint"`
}

// Configure implements sdk.Configurer.
func (readWrite) Configure(c sdk.Config) error {
	var cfg config
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Hint != nil {
		if strings.TrimSpace(*cfg.Hint) == "" {
			return errors.New("hint: must not be empty")
		}
		hint = *cfg.Hint
	}
	return nil
}

// Statement implements sdk.StatementHandler.
func (readWrite) Statement(_ sdk.Session, st *sdk.Statement) sdk.Decision {
	switch {
	case st.InTransaction:
		// The server is fixed: BEGIN chose it.
		return sdk.Default()
	case strings.Contains(st.SQL[:min(len(st.SQL), hintWindow)], hint):
		sdk.Count("hinted_writer", 1)
		return sdk.Writer()
	case st.ReadOnly: // SELECT ... outside a transaction, or BEGIN READ ONLY
		sdk.Count("replica", 1)
		return sdk.Replica()
	}
	sdk.Count("writer", 1)
	return sdk.Writer()
}

func init() { sdk.Register(readWrite{}) }

func main() {}
