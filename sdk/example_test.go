package sdk_test

import "github.com/sluicedb/sluice/sdk"

// tenantGuard is a complete filter: it refuses writes from the "reporting"
// application, sends its reads to replicas, and pins the session while a
// tenant is set. Build it with GOOS=wasip1 GOARCH=wasm go build
// -buildmode=c-shared; test it with sdk/filtertest.
type tenantGuard struct{}

func (tenantGuard) Statement(s sdk.Session, st *sdk.Statement) sdk.Decision {
	if st.Command == "SET" && st.Effects.Has(sdk.EffectSet) {
		s.Set("tenant", "set")
		return sdk.Writer().ForcePin("tenant set")
	}
	if s.ApplicationName() == "reporting" {
		if !st.ReadOnly {
			sdk.Count("refused_writes", 1)
			return sdk.Reject("25006", "the reporting application is read-only")
		}
		return sdk.Replica()
	}
	return sdk.Default()
}

// In the filter's package main:
//
//	func init() { sdk.Register(tenantGuard{}) }
//
//	func main() {}
func Example() {
	sdk.Register(tenantGuard{})
}

// byTeam serves each application's sessions from its own cluster and
// refuses applications it does not know, when the session starts.
type byTeam struct{}

func (byTeam) SessionStart(s sdk.Session) sdk.Decision {
	switch s.ApplicationName() {
	case "billing":
		return sdk.Cluster("billing")
	case "search":
		return sdk.Cluster("search")
	}
	return sdk.Reject("28000", "unknown application "+s.ApplicationName())
}

func ExampleSessionStarter() {
	sdk.Register(byTeam{})
}
