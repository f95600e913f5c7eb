package codec

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// msgpackPath is the msgpack module the gate wraps.
const msgpackPath = "github.com/vmihailenco/msgpack/v5"

// msgpackDecodeEntries are the msgpack functions that decode bytes, or hand
// out a decoder that would. Outside this package none may be named at all:
// not called, not taken as a function value.
var msgpackDecodeEntries = map[string]bool{
	"Unmarshal":          true,
	"NewDecoder":         true,
	"GetDecoder":         true,
	"RegisterExtDecoder": true, // its decoder parses an ext payload, which Check leaves opaque
}

// gateBypasses parses one Go file and returns a line for each place where it
// could decode msgpack without the gate:
//   - it names msgpack.Unmarshal, NewDecoder, GetDecoder or
//     RegisterExtDecoder;
//   - it names the type msgpack.Decoder anywhere but as the parameter of a
//     DecodeMsgpack method (the only place a decoder reaches code outside
//     this package is from inside Unmarshal, over bytes Check has passed);
//   - it dot-imports msgpack, so the names above could not be seen;
//   - it imports another msgpack library, which the gate does not cover.
func gateBypasses(fset *token.FileSet, name string, src any) ([]string, error) {
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, err
	}
	var out []string
	report := func(n ast.Node, format string, a ...any) {
		out = append(out, fmt.Sprintf("%s: %s", fset.Position(n.Pos()), fmt.Sprintf(format, a...)))
	}
	local := "" // the name msgpack is imported under in this file
	for _, is := range f.Imports {
		path, err := strconv.Unquote(is.Path.Value)
		if err != nil {
			return nil, err
		}
		if path != msgpackPath {
			if otherMsgpack(path) {
				report(is, "imports %s, a msgpack decoder the gate does not cover", path)
			}
			continue
		}
		switch {
		case is.Name == nil:
			local = "msgpack"
		case is.Name.Name == ".":
			report(is, "dot-imports %s", msgpackPath)
		case is.Name.Name != "_":
			local = is.Name.Name
		}
	}
	if local == "" {
		return out, nil
	}

	// The msgpack.Decoder parameter types of DecodeMsgpack methods.
	allowed := map[ast.Expr]bool{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Recv == nil || fd.Name.Name != "DecodeMsgpack" {
			continue
		}
		for _, p := range fd.Type.Params.List {
			t := p.Type
			if st, ok := t.(*ast.StarExpr); ok {
				t = st.X
			}
			allowed[t] = true
		}
	}
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		if !ok || id.Name != local {
			return true
		}
		switch {
		case msgpackDecodeEntries[sel.Sel.Name]:
			report(sel, "uses msgpack.%s; decode through codec.Unmarshal", sel.Sel.Name)
		case sel.Sel.Name == "Decoder" && !allowed[sel]:
			report(sel, "uses msgpack.Decoder outside a DecodeMsgpack method's parameters; decode through codec.Unmarshal")
		}
		return true
	})
	return out, nil
}

// otherMsgpack reports whether an import path is a msgpack library other
// than the one the gate wraps.
func otherMsgpack(path string) bool {
	p := strings.ToLower(path)
	return strings.Contains(p, "msgpack") || strings.Contains(p, "tinylib/msgp") || strings.HasPrefix(p, "github.com/ugorji/go/codec")
}

// Every msgpack decode in the module, in every package and binary, goes
// through this package: no non-test Go file outside internal/codec names a
// msgpack decoding entry point. Bytes read from Redis are untrusted (see the
// package documentation), and any decode outside the gate is one that a
// six-byte value can crash.
func TestNoDecodeOutsideGate(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(mod), "module github.com/taskfleet/async\n") {
		t.Fatalf("%s is not the module's root (go.mod: %v)", root, err)
	}
	self, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var bad []string
	files := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
				return filepath.SkipDir
			}
			if path == self {
				return filepath.SkipDir
			}
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir // another module
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		rel, _ := filepath.Rel(root, path)
		found, err := gateBypasses(fset, rel, readFile(t, path))
		if err != nil {
			return err
		}
		bad = append(bad, found...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("scanned only %d Go files under %s; the walk is broken", files, root)
	}
	for _, b := range bad {
		t.Errorf("%s", b)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The checker itself: what it flags and what it lets through.
func TestGateBypassesChecker(t *testing.T) {
	cases := []struct {
		name string
		src  string
		want int // findings
	}{
		{"unmarshal", `package p
import "github.com/vmihailenco/msgpack/v5"
func f(b []byte) { var v any; _ = msgpack.Unmarshal(b, &v) }`, 1},
		{"renamed import", `package p
import mp "github.com/vmihailenco/msgpack/v5"
func f(b []byte) { var v any; _ = mp.Unmarshal(b, &v) }`, 1},
		{"function value", `package p
import "github.com/vmihailenco/msgpack/v5"
var dec = msgpack.Unmarshal`, 1},
		{"new decoder", `package p
import ("bytes"; "github.com/vmihailenco/msgpack/v5")
func f(b []byte) { var v any; _ = msgpack.NewDecoder(bytes.NewReader(b)).Decode(&v) }`, 1},
		{"pooled decoder", `package p
import ("bytes"; "github.com/vmihailenco/msgpack/v5")
func f(b []byte) { d := msgpack.GetDecoder(); d.Reset(bytes.NewReader(b)); _, _ = d.DecodeInt() }`, 1},
		{"zero decoder", `package p
import "github.com/vmihailenco/msgpack/v5"
var d msgpack.Decoder`, 1},
		{"decoder parameter of a function", `package p
import "github.com/vmihailenco/msgpack/v5"
func f(d *msgpack.Decoder) error { _, err := d.DecodeInt(); return err }`, 1},
		{"ext decoder", `package p
import ("reflect"; "github.com/vmihailenco/msgpack/v5")
func init() { msgpack.RegisterExtDecoder(1, nil, func(*msgpack.Decoder, reflect.Value, int) error { return nil }) }`, 2},
		{"dot import", `package p
import . "github.com/vmihailenco/msgpack/v5"
var _ = Marshal`, 1},
		{"another library", `package p
import _ "github.com/shamaton/msgpack/v2"`, 1},

		{"encoding only", `package p
import "github.com/vmihailenco/msgpack/v5"
type A struct{}
func (A) EncodeMsgpack(e *msgpack.Encoder) error { return e.EncodeNil() }
var _, _ = msgpack.Marshal(1)`, 0},
		{"DecodeMsgpack method", `package p
import "github.com/vmihailenco/msgpack/v5"
type A struct{ n int }
func (a *A) DecodeMsgpack(d *msgpack.Decoder) (err error) { a.n, err = d.DecodeInt(); return }`, 0},
		{"a local named msgpack without the import", `package p
type decoder struct{}
func (decoder) Unmarshal([]byte, any) error { return nil }
var msgpack decoder
var _ = msgpack.Unmarshal(nil, nil)`, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := gateBypasses(token.NewFileSet(), c.name+".go", c.src)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != c.want {
				t.Errorf("got %d findings, want %d:\n%s", len(got), c.want, strings.Join(got, "\n"))
			}
			if slices.ContainsFunc(got, func(s string) bool { return !strings.HasPrefix(s, c.name+".go:") }) {
				t.Errorf("a finding without its position: %q", got)
			}
		})
	}
}
