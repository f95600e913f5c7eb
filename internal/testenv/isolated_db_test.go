package testenv_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Packages' tests run at once, and IsolatedRedis flushes its database
// first: two packages naming the same database wipe each other's data on a
// real server. Every database given to IsolatedRedis, other than 0 (a new
// miniredis), must belong to one package, and none may be the test kit's
// (KIT_DB in .ci/run).
func TestIsolatedDatabasesDiffer(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not at %s: %v", root, err)
	}
	use := regexp.MustCompile(`IsolatedRedis\([a-z]+, ([A-Za-z_][A-Za-z0-9_]*|[0-9]+)\)`)
	srcs := map[string]string{} // package dir -> its test files' text
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		srcs[filepath.Dir(path)] += string(b) + "\n"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	owner := map[int]string{}
	// .ci/run gives the test kit (package asynctest) a database of its own
	// through ASYNCTEST_REDIS_URL; the kit refuses one holding other keys.
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	kit := regexp.MustCompile(`(?m)^KIT_DB=([0-9]+)$`).FindSubmatch(ci)
	if kit == nil {
		t.Fatal(".ci/run sets no KIT_DB=<number>: the scan is broken")
	}
	kitDB, _ := strconv.Atoi(string(kit[1]))
	owner[kitDB] = ".ci/run (KIT_DB, the test kit's database)"
	for dir, src := range srcs {
		for _, m := range use.FindAllStringSubmatch(src, -1) {
			db, err := strconv.Atoi(m[1])
			if err != nil {
				def := regexp.MustCompile(`\b` + m[1] + `\s*=\s*([0-9]+)\b`).FindStringSubmatch(src)
				if def == nil {
					t.Errorf("%s: IsolatedRedis(…, %s): no constant %s = <number> in the package's tests", dir, m[1], m[1])
					continue
				}
				db, _ = strconv.Atoi(def[1])
			}
			if db == 0 {
				continue
			}
			rel, _ := filepath.Rel(root, dir)
			if o, ok := owner[db]; ok && o != rel {
				t.Errorf("database %d is given to IsolatedRedis by both %s and %s", db, o, rel)
			}
			owner[db] = rel
		}
	}
	if len(owner) == 0 {
		t.Fatal("found no IsolatedRedis call: the scan is broken")
	}
}
