// Command kitchen is a test filter that uses every part of the SDK and
// misbehaves on demand: the statement text says what to do.
package main

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sluicedb/sluice/sdk"
)

type kitchen struct{}

var hoard [][]byte

func (kitchen) Configure(c sdk.Config) error {
	var cfg struct{ Reject bool }
	if err := c.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Reject {
		return errors.New("kitchen refuses this configuration")
	}
	return nil
}

func (kitchen) SessionStart(s sdk.Session) sdk.Decision {
	s.Set("started", "yes")
	sdk.Count("sessions", 1)
	switch app := s.ApplicationName(); {
	case s.User() == "stranger" || app == "stranger":
		return sdk.Reject("28000", "kitchen does not know you")
	case strings.HasPrefix(app, "cluster:"):
		return sdk.Cluster(app[len("cluster:"):])
	case app == "writer-at-start": // not an answer a session start may give
		return sdk.Writer()
	}
	return sdk.Default()
}

func (kitchen) SessionEnd(sdk.Session) { sdk.Count("ended", 1) }

func (kitchen) Statement(s sdk.Session, st *sdk.Statement) sdk.Decision {
	word, arg, _ := strings.Cut(st.SQL, " ")
	switch word {
	case "loop":
		for {
		}
	case "alloc":
		for {
			hoard = append(hoard, make([]byte, 1<<20))
		}
	case "panic":
		panic("kitchen panics")
	case "exit":
		os.Exit(3)
	case "reject":
		return sdk.Reject("42501", "kitchen says no")
	case "rewrite":
		return sdk.Writer().Rewrite("SELECT 2")
	case "cluster":
		return sdk.Cluster("analytics")
	case "pin":
		return sdk.Writer().ForcePin("kitchen pin")
	case "nopin":
		return sdk.Default().NeverPin()
	case "remember":
		s.Set("k", arg)
		return sdk.Default()
	case "recall":
		if v, ok := s.Get("k"); ok {
			return sdk.Cluster(v)
		}
		return sdk.Writer()
	case "started":
		v, _ := s.Get("started")
		return sdk.Cluster(v)
	case "whoami":
		tls := "plain"
		if s.TLS() {
			tls = "tls"
		}
		return sdk.Cluster(s.User() + "@" + s.Database() + "/" + s.ApplicationName() + "/" + s.ClientAddr() + "/" + s.Listener() + "/" + tls)
	case "year":
		return sdk.Cluster(strconv.Itoa(time.Now().Year()))
	case "log":
		sdk.Log(sdk.Info, "hello from kitchen")
		return sdk.Default()
	case "describe":
		// Echo what the host said about the statement.
		d := st.Command
		if st.ReadOnly {
			d += " ro"
		}
		if st.DefaultPin {
			d += " pin:" + st.PinReason
		}
		if st.Effects.Has(sdk.EffectSet) {
			d += " set"
		}
		if st.Extended {
			d += " ext"
		}
		return sdk.Cluster(d)
	}
	sdk.Count("statements", 1)
	if st.ReadOnly {
		return sdk.Replica()
	}
	return sdk.Writer()
}

func init() { sdk.Register(kitchen{}) }

func main() {}
