// Package sdk is what a filter author imports to write a Sluice filter in
// Go. A filter is a Go value with a method for each hook it wants
// (Configure, SessionStart, Statement, SessionEnd), registered once:
//
//	type readOnlyToReplica struct{}
//
//	func (readOnlyToReplica) Statement(s sdk.Session, st *sdk.Statement) sdk.Decision {
//		if st.ReadOnly && !st.InTransaction {
//			return sdk.Replica()
//		}
//		return sdk.Default()
//	}
//
//	func init() { sdk.Register(readOnlyToReplica{}) }
//
//	func main() {}
//
// and built with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -ldflags="-s -w" -o filter.wasm .
//
// The package implements the ABI of filters/ABI.md. Its statement path does
// not allocate: a Statement's strings point into the host's input buffer and
// are valid only until the hook returns (copy one with strings.Clone to keep
// it). Instances of a filter are pooled by the host and come and go, so a
// filter keeps per-session state with Session.Set, never in its own
// variables; state derived from the configuration in Configure is fine.
//
// Outside wasip1 the package builds too, for documentation and native unit
// tests of a filter's logic; host functions then do nothing (Session values
// are empty, Log and Count are dropped). Test a filter for real with
// sdk/filtertest, which compiles it and runs it in Sluice's host.
package sdk
