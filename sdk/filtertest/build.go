package filtertest

import "github.com/sluicedb/sluice/sdk/filterbuild"

// BuildModule compiles the filter whose main package is in dir to a .wasm
// file with the stock toolchain (GOOS=wasip1 GOARCH=wasm, c-shared) and
// returns its path. Builds are cached by a hash of the Go version, the
// filter's sources, its module's go.mod and go.sum, and (for filters inside
// Sluice's module) the SDK's sources, under cacheDir, or under the user's
// cache directory when cacheDir is "". It is filterbuild.Cached; a failed
// compilation is a *filterbuild.Error.
func BuildModule(dir, cacheDir string) (string, error) {
	return filterbuild.Cached(dir, cacheDir)
}
