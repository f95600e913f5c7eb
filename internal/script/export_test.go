package script

import "strings"

// Sources returns the full source of every script, keyed by the first
// line of its body after the helpers (its contract header), for tests.
func Sources() map[string]string {
	out := make(map[string]string, len(all))
	for _, s := range all {
		src := sources[s]
		key := s.Hash()
		for _, line := range strings.Split(src, "\n") {
			if strings.HasPrefix(line, "-- ") && !strings.Contains(line, "local function") {
				key = line
			}
		}
		out[key+" "+s.Hash()[:8]] = src
	}
	return out
}

// LibNames returns the names of lib.lua's helpers.
func LibNames() []string {
	var out []string
	for _, f := range libFuncs {
		out = append(out, f.name)
	}
	return out
}
