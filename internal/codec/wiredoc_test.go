package codec

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// wireDocPath is the document of the wire format, which these tests keep
// true (docs/wire.md, "The envelope").
const wireDocPath = "../../docs/wire.md"

// wireDocTable returns the rows of the Markdown table that follows the
// marker "<!-- wiredoc:name -->" in doc, header and separator left out,
// each row's cells trimmed (an escaped "\|" stays one cell's "|").
func wireDocTable(t *testing.T, doc, name string) [][]string {
	t.Helper()
	_, rest, ok := strings.Cut(doc, "<!-- wiredoc:"+name+" -->\n")
	if !ok {
		t.Fatalf("%s: no marker for table %q", wireDocPath, name)
	}
	var rows [][]string
	for i, line := range strings.Split(rest, "\n") {
		if !strings.HasPrefix(line, "|") {
			break
		}
		if i < 2 {
			continue // header and separator
		}
		line = strings.ReplaceAll(strings.Trim(line, "|"), `\|`, "\x00")
		var cells []string
		for _, c := range strings.Split(line, "|") {
			cells = append(cells, strings.ReplaceAll(strings.TrimSpace(c), "\x00", "|"))
		}
		rows = append(rows, cells)
	}
	if len(rows) == 0 {
		t.Fatalf("%s: table %q has no rows", wireDocPath, name)
	}
	return rows
}

// docField is one row of the envelope's (or a History entry's) field table.
type docField struct {
	pos      int
	name     string // the Go field
	typ      string // the msgpack type
	readWhen int    // the least array length that carries it (envelope only)
}

var readWhenRE = regexp.MustCompile(`^(\d+)\+ elements$`)

func docFields(t *testing.T, doc, table string, withReadWhen bool) []docField {
	t.Helper()
	var out []docField
	for _, r := range wireDocTable(t, doc, table) {
		pos, err := strconv.Atoi(r[0])
		if err != nil {
			t.Fatalf("table %q: row %q: position: %v", table, r, err)
		}
		f := docField{pos: pos, name: strings.Trim(r[1], "`"), typ: r[2]}
		if withReadWhen {
			m := readWhenRE.FindStringSubmatch(r[3])
			if m == nil {
				t.Fatalf("table %q: row %q: want %q in column 4", table, r, "<n>+ elements")
			}
			f.readWhen, _ = strconv.Atoi(m[1])
		}
		out = append(out, f)
	}
	return out
}

// wireType is the msgpack type the document names for a Go field's type.
func wireType(t reflect.Type) string {
	switch {
	case t.Kind() == reflect.String:
		return "str"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return "int"
	case t == reflect.TypeFor[[]byte]():
		return "bin"
	case t == reflect.TypeFor[[]string]():
		return "array of str"
	case t == reflect.TypeFor[[]Attempt]():
		return "array of History entries"
	}
	return "(a type the document does not know: " + t.String() + ")"
}

// checkFieldTable checks a field table against struct type st: one row per
// field, in position order, named and typed as the struct has it.
func checkFieldTable(t *testing.T, table string, fields []docField, st reflect.Type, want int) {
	t.Helper()
	if st.NumField() != want || len(fields) != want {
		t.Fatalf("table %q has %d rows, %s has %d fields, the encoder writes %d: document every field (docs/wire.md)", table, len(fields), st, st.NumField(), want)
	}
	for i, f := range fields {
		if f.pos != i {
			t.Errorf("table %q: row %d has position %d", table, i, f.pos)
		}
		sf, ok := st.FieldByName(f.name)
		if !ok {
			t.Errorf("table %q: row %d names %q, which %s has not", table, i, f.name, st)
			continue
		}
		if got := wireType(sf.Type); got != f.typ {
			t.Errorf("table %q: %s is %q in the table, %q by its Go type", table, f.name, f.typ, got)
		}
	}
}

// sampleEnvelope returns an envelope whose fields all hold distinct
// values, none zero.
func sampleEnvelope() Envelope {
	var e Envelope
	v := reflect.ValueOf(&e).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Interface().(type) {
		case string:
			f.SetString(fmt.Sprintf("s%d", i))
		case int, int64:
			f.SetInt(int64(1000 + i))
		case []byte:
			f.SetBytes([]byte{0x81, 0xa1, 'a', byte(i)})
		case []string:
			f.Set(reflect.ValueOf([]string{fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)}))
		case []Attempt:
			f.Set(reflect.ValueOf([]Attempt{{Attempt: 1, StartedMs: 2, FinishedMs: 3, Error: "e", Worker: "w"}}))
		default:
			panic("sampleEnvelope: a field of an unknown type: " + v.Type().Field(i).Name)
		}
	}
	return e
}

// elements splits the msgpack array b into its elements' encodings.
func elements(t *testing.T, b []byte) [][]byte {
	t.Helper()
	r := reader{b: b}
	n := r.arrayLen()
	out := make([][]byte, 0, n)
	for i := 0; i < n && r.err == nil; i++ {
		start := r.i
		r.skip()
		out = append(out, b[start:r.i])
	}
	if r.err != nil || r.i != len(b) {
		t.Fatalf("split %x: %v (at %d of %d)", b, r.err, r.i, len(b))
	}
	return out
}

// arrayOf is the msgpack array of elems.
func arrayOf(elems [][]byte) []byte {
	b := appendArrayLen(nil, len(elems))
	for _, e := range elems {
		b = append(b, e...)
	}
	return b
}

// decodeElem decodes one element as the value of a field of type typ.
func decodeElem(t *testing.T, b []byte, typ reflect.Type) any {
	t.Helper()
	r := reader{b: b}
	var v any
	switch wireType(typ) {
	case "str":
		v = r.str()
	case "int":
		v = reflect.ValueOf(r.int()).Convert(typ).Interface()
	case "bin":
		v = r.bin()
	case "array of str":
		s := make([]string, r.arrayLen())
		for i := range s {
			s[i] = r.str()
		}
		v = s
	case "array of History entries":
		a := make([]Attempt, r.arrayLen())
		for i := range a {
			a[i] = r.attempt()
		}
		v = a
	}
	if r.err != nil || r.i != len(b) {
		t.Fatalf("decode %x as %s: %v", b, typ, r.err)
	}
	return v
}

// TestWireDocEnvelope: the field table of docs/wire.md is the encoder's
// layout. Every field of Envelope has one row, at the position
// AppendEnvelope writes it, with its msgpack type; the column "Read when"
// is the least array length from which DecodeEnvelope reads the field; and
// a longer array (a newer writer's) decodes the same, as "Version"
// promises. A field added to Envelope without a row fails here.
func TestWireDocEnvelope(t *testing.T) {
	t.Parallel()
	docb, err := os.ReadFile(wireDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(docb)
	fields := docFields(t, doc, "envelope-fields", true)
	checkFieldTable(t, "envelope-fields", fields, reflect.TypeFor[Envelope](), envelopeAll)
	if t.Failed() {
		t.FailNow()
	}

	e := sampleEnvelope()
	ev := reflect.ValueOf(e)
	elems := elements(t, AppendEnvelope(nil, &e))
	if len(elems) != envelopeAll {
		t.Fatalf("the encoder wrote %d elements, want %d", len(elems), envelopeAll)
	}
	for _, f := range fields {
		want := ev.FieldByName(f.name)
		if got := decodeElem(t, elems[f.pos], want.Type()); !reflect.DeepEqual(got, want.Interface()) {
			t.Errorf("element %d decodes to %#v; the table puts %s (%#v) there", f.pos, got, f.name, want.Interface())
		}
	}

	// The always present fields: fewer than envelopeFields is malformed.
	if _, err := DecodeEnvelope(arrayOf(elems[:envelopeFields-1])); err == nil {
		t.Errorf("an array of %d elements decoded", envelopeFields-1)
	}
	for _, f := range fields {
		if f.readWhen < envelopeFields || f.readWhen > envelopeAll || f.readWhen <= f.pos {
			t.Errorf("%s: read when the array has %d+ elements, at position %d", f.name, f.readWhen, f.pos)
			continue
		}
		got, err := DecodeEnvelope(arrayOf(elems[:f.readWhen]))
		if err != nil {
			t.Fatalf("decode the first %d elements: %v", f.readWhen, err)
		}
		if g := reflect.ValueOf(*got).FieldByName(f.name).Interface(); !reflect.DeepEqual(g, ev.FieldByName(f.name).Interface()) {
			t.Errorf("%s: an array of %d elements decodes it as %#v", f.name, f.readWhen, g)
		}
		if f.readWhen == envelopeFields {
			continue
		}
		got, err = DecodeEnvelope(arrayOf(elems[:f.readWhen-1]))
		if err != nil {
			t.Fatalf("decode the first %d elements: %v", f.readWhen-1, err)
		}
		if g := reflect.ValueOf(*got).FieldByName(f.name); !g.IsZero() {
			t.Errorf("%s: read from an array of %d elements already (%#v); the table says %d", f.name, f.readWhen-1, g.Interface(), f.readWhen)
		}
	}

	// A newer writer's extra elements are ignored.
	longer := arrayOf(append(append([][]byte(nil), elems...), []byte{0xa3, 'n', 'e', 'w'}, []byte{0x2a}))
	got, err := DecodeEnvelope(longer)
	if err != nil || !reflect.DeepEqual(*got, e) {
		t.Errorf("an envelope of %d elements decodes to %+v, %v; want %+v", envelopeAll+2, got, err, e)
	}
}

// TestWireDocAttempt: the table of a History entry's fields is the
// encoder's layout, as TestWireDocEnvelope checks the envelope's.
func TestWireDocAttempt(t *testing.T) {
	t.Parallel()
	docb, err := os.ReadFile(wireDocPath)
	if err != nil {
		t.Fatal(err)
	}
	fields := docFields(t, string(docb), "attempt-fields", false)
	checkFieldTable(t, "attempt-fields", fields, reflect.TypeFor[Attempt](), attemptFields)
	if t.Failed() {
		t.FailNow()
	}
	a := Attempt{Attempt: 3, StartedMs: 1796485418347, FinishedMs: 1796485418999, Error: "boom", Worker: "w-1"}
	elems := elements(t, AppendEnvelope(nil, &Envelope{Kind: "k", History: []Attempt{a}}))
	hist := elements(t, elems[envelopeAll-1])
	if len(hist) != 1 {
		t.Fatalf("history of %d entries", len(hist))
	}
	entry := elements(t, hist[0])
	av := reflect.ValueOf(a)
	for _, f := range fields {
		want := av.FieldByName(f.name)
		if got := decodeElem(t, entry[f.pos], want.Type()); !reflect.DeepEqual(got, want.Interface()) {
			t.Errorf("element %d of a History entry decodes to %#v; the table puts %s (%#v) there", f.pos, got, f.name, want.Interface())
		}
	}
}

// hexDump is one annotated dump of docs/wire.md: its bytes, and per
// element (in order) the bytes the document shows for it and its
// annotation.
type hexDump struct {
	all      []byte
	header   string // "array of <n> elements"
	elems    [][]byte
	notes    []string // "[i] Field = value"
	headerOK bool
}

var hexByteRE = regexp.MustCompile(`^[0-9a-f]{2}$`)

// hexDumps parses the code blocks that follow the marker
// "<!-- wiredoc:hex -->". A line is bytes in hex, then its annotation: the
// array's header ("array of n elements"), an element's ("[i] Field =
// value"), or a remark in parentheses (or nothing) on a line that goes on
// with the element above.
func hexDumps(t *testing.T, doc string) []hexDump {
	t.Helper()
	var out []hexDump
	parts := strings.Split(doc, "<!-- wiredoc:hex -->\n")
	for _, p := range parts[1:] {
		body, ok := strings.CutPrefix(p, "```\n")
		if !ok {
			t.Fatalf("a hex dump marker is not followed by a code block")
		}
		body, _, ok = strings.Cut(body, "```")
		if !ok {
			t.Fatalf("a hex dump's code block does not end")
		}
		var d hexDump
		for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
			toks := strings.Fields(line)
			var bs []byte
			n := 0
			for ; n < len(toks) && hexByteRE.MatchString(toks[n]); n++ {
				c, _ := hex.DecodeString(toks[n])
				bs = append(bs, c...)
			}
			note := strings.Join(toks[n:], " ")
			d.all = append(d.all, bs...)
			switch {
			case strings.HasPrefix(note, "array of "):
				d.header, d.headerOK = note, len(d.elems) == 0
			case strings.HasPrefix(note, "["):
				d.elems = append(d.elems, bs)
				d.notes = append(d.notes, note)
			case note == "" || strings.HasPrefix(note, "("):
				if len(d.elems) == 0 {
					t.Fatalf("hex dump: line %q goes on with no element", line)
				}
				d.elems[len(d.elems)-1] = append(d.elems[len(d.elems)-1], bs...)
			default:
				t.Fatalf("hex dump: line %q: annotation %q is not one this test reads", line, note)
			}
		}
		out = append(out, d)
	}
	if len(out) == 0 {
		t.Fatalf("%s has no hex dump", wireDocPath)
	}
	return out
}

var noteRE = regexp.MustCompile(`^\[(\d+)\] (\w+) = (.*)$`)

// noteValue is how an annotation spells field value v.
func noteValue(t *testing.T, v any) string {
	t.Helper()
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case []byte:
		// The args: the JSON of the msgpack they hold, by the JSON rule.
		j, err := ToJSON(nil, x)
		if err != nil {
			t.Fatalf("payload %x: %v", x, err)
		}
		return string(j)
	case []string, []Attempt:
		if reflect.ValueOf(x).Len() == 0 {
			return "[]"
		}
		j, err := json.Marshal(x)
		if err != nil {
			t.Fatal(err)
		}
		return string(j)
	}
	t.Fatalf("no spelling for %T", v)
	return ""
}

// TestWireDocHexDumps: each annotated hex dump of docs/wire.md is what
// AppendEnvelope writes for the envelope DecodeEnvelope reads from it, the
// bytes of each annotated element are that element's encoding, the
// annotation's position is the field table's, and its value is the
// decoded field's. Every element of a dump is annotated.
func TestWireDocHexDumps(t *testing.T) {
	t.Parallel()
	docb, err := os.ReadFile(wireDocPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(docb)
	posOf := map[string]int{}
	for _, f := range docFields(t, doc, "envelope-fields", true) {
		posOf[f.name] = f.pos
	}
	for di, d := range hexDumps(t, doc) {
		env, err := DecodeEnvelope(d.all)
		if err != nil {
			t.Fatalf("dump %d: %v", di, err)
		}
		if again := AppendEnvelope(nil, env); !bytes.Equal(again, d.all) {
			t.Errorf("dump %d: the encoder writes its envelope as\n%x\nnot as the dump\n%x", di, again, d.all)
		}
		elems := elements(t, d.all)
		if want := fmt.Sprintf("array of %d elements", len(elems)); !d.headerOK || d.header != want {
			t.Errorf("dump %d: header annotated %q (first: %v), want %q", di, d.header, d.headerOK, want)
		}
		if len(d.elems) != len(elems) {
			t.Fatalf("dump %d: %d elements annotated, the array has %d", di, len(d.elems), len(elems))
		}
		ev := reflect.ValueOf(*env)
		for i, note := range d.notes {
			m := noteRE.FindStringSubmatch(note)
			if m == nil {
				t.Errorf("dump %d: annotation %q is not \"[i] Field = value\"", di, note)
				continue
			}
			pos, _ := strconv.Atoi(m[1])
			if pos != i {
				t.Errorf("dump %d: annotation %q is element %d", di, note, i)
			}
			if p, ok := posOf[m[2]]; !ok || p != pos {
				t.Errorf("dump %d: annotation %q: the field table puts %s at %d (known: %v)", di, note, m[2], p, ok)
				continue
			}
			if !bytes.Equal(d.elems[i], elems[i]) {
				t.Errorf("dump %d: %s: the dump shows % x, the element is % x", di, m[2], d.elems[i], elems[i])
			}
			if got := noteValue(t, ev.FieldByName(m[2]).Interface()); got != m[3] {
				t.Errorf("dump %d: %s decodes to %s; the annotation says %s", di, m[2], got, m[3])
			}
			if m[2] == "Payload" {
				// "Args and results as JSON": these args sent as JSON
				// (over HTTP) are the same Payload as the Go client's.
				if p, err := FromJSON(nil, []byte(m[3]), 0); err != nil || !bytes.Equal(p, env.Payload) {
					t.Errorf("dump %d: the JSON rule makes %s into %x, %v; the Go client wrote %x", di, m[3], p, err, env.Payload)
				}
			}
		}
	}
}
