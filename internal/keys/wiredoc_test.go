package keys_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/taskfleet/async/internal/keys"
	"github.com/taskfleet/async/ratelimit"
)

// wireDocPath is the document of the wire format, whose key table these
// tests keep true (docs/wire.md, "Keys").
const wireDocPath = "../../docs/wire.md"

// keyRow is one row of the key table.
type keyRow struct {
	pattern string // "async:{q:<queue>}:t:<key>"
	typ     string // the Redis type, or "channel"
	goExpr  string // how package keys builds it: "Queue.Task(key)"
}

// keyTable parses the table that follows "<!-- wiredoc:keys -->".
func keyTable(t *testing.T) (string, []keyRow) {
	t.Helper()
	b, err := os.ReadFile(wireDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, rest, ok := strings.Cut(doc, "<!-- wiredoc:keys -->\n")
	if !ok {
		t.Fatalf("%s: no key table marker", wireDocPath)
	}
	var rows []keyRow
	for i, line := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		if i < 2 {
			continue
		}
		cells := strings.Split(strings.ReplaceAll(strings.Trim(line, "|"), `\|`, "\x00"), "|")
		if len(cells) != 6 {
			t.Fatalf("key table row %q has %d cells, want 6", line, len(cells))
		}
		cell := func(i int) string { return strings.Trim(strings.TrimSpace(cells[i]), "`") }
		rows = append(rows, keyRow{pattern: cell(0), typ: cell(1), goExpr: cell(2)})
	}
	if len(rows) == 0 {
		t.Fatalf("%s: the key table has no rows", wireDocPath)
	}
	return doc, rows
}

// keyFuncs and keyConsts are the keys and channels package keys builds
// outside the Queue and Limit methods, by name. A new one must be added
// here and to the table of docs/wire.md (TestWireDocKeys says so).
var (
	keyFuncs = map[string]func(string) string{
		"Worker":     keys.Worker,
		"RateBucket": keys.RateBucket,
	}
	keyConsts = map[string]string{
		"DueIndex":       keys.DueIndex,
		"DueGen":         keys.DueGen,
		"DueWake":        keys.DueWake,
		"Queues":         keys.Queues,
		"RepeatIndex":    keys.RepeatIndex,
		"HousekeepClaim": keys.HousekeepClaim,
		"WorkerIndex":    keys.WorkerIndex,
		"TestKitMarker":  keys.TestKitMarker,
		"TestKitLock":    keys.TestKitLock,
	}
)

// notKeys are the exported names of package keys that build no key or
// channel: name rules, ids, prefixes. A name that is in neither this list
// nor the key table fails TestWireDocKeys.
var notKeys = []string{
	"Prefix", "Group", "MaxNameLen", "ErrInvalidName", "ValidateName",
	"MaxPartitionKeyLen", "ValidatePartitionKey", "BadKeyByte", "IsEntryID",
	"Queue", "ForQueue", "BatchKeyPrefix", "BatchOfItem", "TaskID",
	"SplitTaskID", "GroupPrefix", "MaxGroupIDLen", "GroupID", "IsGroupID",
	"SplitGroupID", "Limit", "ForLimit", "PauseNotice", "RatePrefix",
	"LimitPrefix", "ThrottleMatch",
}

// docValues are values of notKeys constants that reach Redis as names or
// messages: the document must spell each (in backticks).
var docValues = []string{keys.Prefix, keys.Group, keys.GroupPrefix, keys.BatchKeyPrefix, keys.PauseNotice}

// exportedNames lists the exported names package keys declares:
// functions, types, constants and variables by name, methods as
// "Type.Method".
func exportedNames(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var names []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				if d.Recv != nil {
					recv := d.Recv.List[0].Type
					if s, ok := recv.(*ast.StarExpr); ok {
						recv = s.X
					}
					names = append(names, recv.(*ast.Ident).Name+"."+d.Name.Name)
				} else {
					names = append(names, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							names = append(names, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								names = append(names, n.Name)
							}
						}
					}
				}
			}
		}
	}
	return names
}

var (
	placeholderRE = regexp.MustCompile(`<(\w+)>`)
	// Queue.Task(key), Limit.Holders(), Worker(name) + ":wake", DueIndex
	goExprRE = regexp.MustCompile(`^(?:(Queue|Limit)\.)?(\w+)(?:\(([\w, ]*)\))?(?: \+ "([^"]*)")?$`)
)

// sample is the value a placeholder <name> stands for in these tests.
func sample(name string) string { return "v_" + name }

// fill replaces every placeholder <name> of s by sample(name).
func fill(s string) string {
	return placeholderRE.ReplaceAllStringFunc(s, func(p string) string { return sample(p[1 : len(p)-1]) })
}

// build evaluates a row's Go expression with sample arguments: the key or
// channel package keys builds, and the name the row documents ("Queue.Task",
// "DueIndex").
func build(t *testing.T, expr string) (key, name string) {
	t.Helper()
	m := goExprRE.FindStringSubmatch(expr)
	if m == nil {
		t.Fatalf("key table: Go expression %q is not one this test reads", expr)
	}
	recv, fn, params, suffix := m[1], m[2], m[3], m[4]
	var args []reflect.Value
	if params != "" {
		for _, p := range strings.Split(params, ", ") {
			args = append(args, reflect.ValueOf(sample(p)))
		}
	}
	var f reflect.Value
	switch recv {
	case "Queue":
		name = "Queue." + fn
		f = reflect.ValueOf(keys.ForQueue(sample("queue"))).MethodByName(fn)
	case "Limit":
		name = "Limit." + fn
		f = reflect.ValueOf(keys.ForLimit(sample("scope"))).MethodByName(fn)
	default:
		name = fn
		if c, ok := keyConsts[fn]; ok && !strings.Contains(expr, "(") {
			return c + fill(suffix), name
		}
		if g, ok := keyFuncs[fn]; ok {
			f = reflect.ValueOf(g)
		}
	}
	if !f.IsValid() {
		t.Fatalf("key table: %q: package keys has no such key (or this test's keyFuncs/keyConsts lacks it)", expr)
	}
	if f.Type().NumIn() != len(args) {
		t.Fatalf("key table: %q names %d parameters, %s takes %d", expr, len(args), name, f.Type().NumIn())
	}
	return f.Call(args)[0].String() + fill(suffix), name
}

// TestWireDocKeys: every row of the key table of docs/wire.md is a key or
// channel package keys builds, its pattern spelled as the package builds
// it (each placeholder named as the parameter it stands for); every key
// and channel package keys builds has a row; the values of the names that
// reach Redis are in the document. A key added to package keys without a
// row fails here.
func TestWireDocKeys(t *testing.T) {
	t.Parallel()
	doc, rows := keyTable(t)
	documented := map[string]bool{}
	for _, r := range rows {
		got, name := build(t, r.goExpr)
		if want := fill(r.pattern); got != want {
			t.Errorf("key table: %s builds %q; the pattern %q says %q", r.goExpr, got, r.pattern, want)
		}
		switch r.typ {
		case "string", "hash", "list", "set", "zset", "stream", "channel":
		default:
			t.Errorf("key table: %s: type %q is not a Redis type (or channel)", r.pattern, r.typ)
		}
		documented[name] = true
	}
	// ratelimit's bucket key is the one the table documents.
	if keys.RateBucket("a:b") != ratelimit.BucketKey("a:b") {
		t.Errorf("keys.RateBucket and ratelimit.BucketKey disagree")
	}

	names := exportedNames(t)
	for _, n := range notKeys {
		if !slices.Contains(names, n) {
			t.Errorf("notKeys lists %s, which package keys does not declare", n)
		}
		if documented[n] {
			t.Errorf("%s is in the key table and in notKeys", n)
		}
	}
	for _, n := range names {
		if !documented[n] && !slices.Contains(notKeys, n) {
			t.Errorf("package keys declares %s, which the key table of docs/wire.md does not document (a key: add a row, and for a function or a constant an entry of keyFuncs/keyConsts here; not a key: add it to notKeys)", n)
		}
	}
	for n := range documented {
		if !slices.Contains(names, n) {
			t.Errorf("the key table documents %s, which package keys does not declare", n)
		}
	}
	for _, v := range docValues {
		if !strings.Contains(doc, "`"+v) {
			t.Errorf("docs/wire.md does not spell %q", v)
		}
	}
}
