package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

func startupBytes(code uint32, body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(body)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, body...)
}

func TestReadStartup(t *testing.T) {
	params := []Param{{"user", "app"}, {"database", "db"}, {"application_name", "x y"}}
	tests := []struct {
		name    string
		in      []byte
		want    *Startup
		wantErr error
	}{
		{"startup", EncodeStartup(nil, params), &Startup{Kind: KindStartup, Params: params}, nil},
		{"minor version", startupBytes(3<<16|2, []byte{0}), &Startup{Kind: KindStartup, ProtocolMinor: 2}, nil},
		{"ssl", startupBytes(codeSSL, nil), &Startup{Kind: KindSSLRequest}, nil},
		{"encoded ssl", EncodeSSLRequest(), &Startup{Kind: KindSSLRequest}, nil},
		{"gssenc", startupBytes(codeGSSENC, nil), &Startup{Kind: KindGSSENCRequest}, nil},
		{"cancel", EncodeCancel(7, 9), &Startup{Kind: KindCancel, ProcessID: 7, SecretKey: 9}, nil},
		{"too short", []byte{0, 0, 0, 4, 0, 0, 0, 0}, nil, ErrStartupInvalid},
		{"too long", startupBytes(ProtocolVersion3, make([]byte, 20000)), nil, ErrStartupTooLarge},
		{"protocol 2", startupBytes(2<<16, []byte{0}), nil, ErrUnsupportedProtocol},
		{"no terminator", startupBytes(ProtocolVersion3, []byte("user\x00app\x00")), nil, ErrStartupInvalid},
		{"name without value", startupBytes(ProtocolVersion3, []byte("user\x00")), nil, ErrStartupInvalid},
		{"ssl with body", startupBytes(codeSSL, []byte{1}), nil, ErrStartupInvalid},
		{"truncated", EncodeStartup(nil, params)[:10], nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadStartup(bytes.NewReader(tt.in))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadStartupReadsNothingBeyondThePacket(t *testing.T) {
	in := append(startupBytes(codeSSL, nil), "early plaintext"...)
	r := bytes.NewReader(in)
	if _, err := ReadStartup(r); err != nil {
		t.Fatal(err)
	}
	if r.Len() != len("early plaintext") {
		t.Fatalf("ReadStartup consumed %d bytes past the SSLRequest", len("early plaintext")-r.Len())
	}
}

func TestParseOptions(t *testing.T) {
	tests := []struct {
		in   string
		want []Param
		err  bool
	}{
		{"-c search_path=a,b", []Param{{"search_path", "a,b"}}, false},
		{"-cstatement_timeout=5s --work-mem=64kB", []Param{{"statement_timeout", "5s"}, {"work_mem", "64kB"}}, false},
		{`-c application_name=with\ space`, []Param{{"application_name", "with space"}}, false},
		{"", nil, false},
		{"-x", nil, true},
		{"-c novalue", nil, true},
	}
	for _, tt := range tests {
		got, err := ParseOptions(tt.in)
		if (err != nil) != tt.err || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseOptions(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestForwardKeepsMessageBoundaries(t *testing.T) {
	big := strings.Repeat("x", 3*bufferSize+17)
	var in bytes.Buffer
	in.Write(AppendQuery(nil, "SELECT 1"))
	in.Write(AppendMessage(nil, 'd', []byte(big)))
	in.Write(AppendSync(nil))
	r := NewReader(&in)
	var out bytes.Buffer
	w := NewWriter(&out)
	var types []byte
	for {
		typ, n, err := r.PeekHeader()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, typ)
		if err := r.CopyTo(w, HeaderLen+n); err != nil {
			t.Fatal(err)
		}
	}
	w.Flush()
	want := append(append(AppendQuery(nil, "SELECT 1"), AppendMessage(nil, 'd', []byte(big))...), AppendSync(nil)...)
	if string(types) != "QdS" || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("forwarded %q, %d bytes; want QdS, %d bytes", types, out.Len(), len(want))
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestForwardConsumesTheMessageWhenWritingFails(t *testing.T) {
	var in bytes.Buffer
	in.Write(AppendMessage(nil, 'D', bytes.Repeat([]byte("y"), 2*bufferSize)))
	in.Write(AppendReadyForQuery(nil, TxIdle))
	r := NewReader(&in)
	_, n, _ := r.PeekHeader()
	if err := r.CopyTo(NewWriter(failWriter{}), HeaderLen+n); !errors.Is(err, ErrWrite) {
		t.Fatalf("err = %v, want ErrWrite", err)
	}
	typ, body, err := r.ReadMessage()
	if err != nil || typ != 'Z' || string(body) != "I" {
		t.Fatalf("after a failed forward: %q %q %v", typ, body, err)
	}
}

func TestPeekHeaderRejectsBadLengths(t *testing.T) {
	for _, n := range []uint32{0, 3, 0x40000000} {
		b := append([]byte{'Q'}, binary.BigEndian.AppendUint32(nil, n)...)
		if _, _, err := NewReader(bytes.NewReader(b)).PeekHeader(); !errors.Is(err, ErrBadLength) {
			t.Errorf("length %d: err = %v, want ErrBadLength", n, err)
		}
	}
}

func TestErrorEncoding(t *testing.T) {
	b := Fatalf(CodeInvalidPassword, "password authentication failed for user %q", "app").Encode(nil)
	if b[0] != 'E' || int(binary.BigEndian.Uint32(b[1:]))+1 != len(b) {
		t.Fatalf("bad frame %q", b)
	}
	for _, want := range []string{"SFATAL", "C28P01", `Mpassword authentication failed for user "app"`} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("ErrorResponse lacks %q: %q", want, b)
		}
	}
	if AsError(io.EOF).Code != CodeInternalError || strings.Contains(AsError(errors.New("10.0.0.1:5432")).Message, "10.0.0.1") {
		t.Error("AsError leaks internal detail")
	}
}

func TestQuoteLiteral(t *testing.T) {
	if got := QuoteLiteral(`it's a \ test`); got != `E'it''s a \\ test'` {
		t.Fatalf("QuoteLiteral = %s", got)
	}
}

func FuzzReadStartup(f *testing.F) {
	f.Add(EncodeStartup(nil, []Param{{"user", "u"}, {"options", "-c a=b"}}))
	f.Add(EncodeCancel(1, 2))
	f.Add(startupBytes(codeSSL, nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ReadStartup(bytes.NewReader(b))
		if err != nil {
			return
		}
		if st.Kind == KindStartup {
			for _, p := range st.Params {
				if p.Name == "options" {
					ParseOptions(p.Value)
				}
			}
			re, err := ReadStartup(bytes.NewReader(EncodeStartup(nil, st.Params)))
			if err != nil || !reflect.DeepEqual(re.Params, st.Params) {
				t.Fatalf("re-encoding %v gave %v, %v", st.Params, re, err)
			}
		}
	})
}
