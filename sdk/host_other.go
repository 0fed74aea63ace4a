//go:build !wasip1

package sdk

// Outside wasip1 there is no host: the package builds for documentation and
// native tests of a filter's logic, and host functions do nothing.

func attr(int32) string           { return "" }
func kvGet(string) (string, bool) { return "", false }
func kvSet(string, string) bool   { return false }
func kvDelete(string)             {}
func hostLog(Level, string)       {}
func counterAdd(string, int64)    {}
