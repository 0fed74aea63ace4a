package filters

import "time"

// SlowReplacement makes every instance f builds to replace one wait d
// first, as building does on a loaded machine.
func SlowReplacement(f *Filter, d time.Duration) { f.slowBuild = d }
