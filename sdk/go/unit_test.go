package ipush

// unit_test.go: the pure parts (parsers, encoders, backoff) on their own.

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseChunk(t *testing.T) {
	for _, tc := range []struct {
		in      string
		payload string
		n       int
		last    bool
		err     string // "" ok, "more" need more, else a substring
	}{
		{in: "", err: "more"},
		{in: "7", err: "more"},
		{in: "7\r", err: "more"},
		{in: "7\r\n{\"y\":0}", err: "more"},
		{in: "7\r\n{\"y\":0}\r", err: "more"},
		{in: "7\r\n{\"y\":0}\r\n", payload: `{"y":0}`, n: 12},
		{in: "7\r\n{\"y\":0}\r\n7\r\n", payload: `{"y":0}`, n: 12},
		{in: "A\r\n0123456789\r\n", payload: "0123456789", n: 15},
		{in: "a;ext=1\r\n0123456789\r\n", payload: "0123456789", n: 21},
		{in: "0\r\n\r\n", last: true, n: 5},
		{in: "0\r\n", err: "more"},
		{in: "0\r\nTrailer: x\r\n\r\n", last: true, n: 17},
		{in: "zz\r\n", err: "bad chunk size"},
		{in: "\r\n", err: "bad chunk size"},
		{in: "7\n{\"y\":0}\r\n", err: "bad chunk size line"},
		{in: "7 \r\n", err: "bad chunk size line"},
		{in: "7\r\n{\"y\":0}XX", err: "missing CRLF"},
		{in: "11111111111111111\r\n", err: "too many digits"},
		{in: "100001\r\n", err: "over the limit"},
		{in: "1;" + strings.Repeat("x", 2000), err: "line too long"},
	} {
		payload, n, last, err := parseChunk([]byte(tc.in), 1<<20)
		switch {
		case tc.err == "more":
			if err != errNeedMore {
				t.Errorf("%q: %v, want need more", tc.in, err)
			}
		case tc.err != "":
			if err == nil || err == errNeedMore || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
			}
		default:
			if err != nil || string(payload) != tc.payload || n != tc.n || last != tc.last {
				t.Errorf("%q: %q %d %v %v", tc.in, payload, n, last, err)
			}
		}
	}
	// appendChunk output parses back, at every size class of the hex length.
	for _, size := range []int{1, 15, 16, 255, 256, 4096, 70000} {
		p := bytes.Repeat([]byte{'x'}, size)
		b := appendChunk(nil, p)
		got, n, last, err := parseChunk(b, 1<<20)
		if err != nil || !bytes.Equal(got, p) || n != len(b) || last {
			t.Errorf("size %d: %d %v %v", size, n, last, err)
		}
	}
}

func TestSSEParser(t *testing.T) {
	in := ": comment\n" +
		"retry: 100\n" +
		"data: line one\n" +
		"data:line two\n" +
		"id: 9\n" +
		"unknown: x\n" +
		"\n" +
		"event: moved\n" +
		"data\n" +
		"\n" +
		"id: a\x00b\n" +
		"\n" + // no data: no event
		"data: last"
	want := []sseEvent{
		{ID: "9", HasID: true, Data: "line one\nline two"},
		{Event: "moved", Data: ""},
	}
	for split := 0; split <= len(in); split++ {
		p := sseParser{max: 100}
		a, err1 := p.feed([]byte(in[:split]))
		b, err2 := p.feed([]byte(in[split:]))
		got := append(a, b...)
		if err1 != nil || err2 != nil || len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Fatalf("split %d: %+v %v %v", split, got, err1, err2)
		}
	}
	p := sseParser{max: 10}
	if _, err := p.feed([]byte("data: 0123456789")); err == nil {
		t.Fatal("an overlong line was accepted")
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, in := range []string{
		``, `[]`, `null`, `"x"`, `{}`, `{"f":"a"}`, `{"y":"3"}`, `{"y":1.5}`, `{"y":3,"s":-1}`,
		`{"y":3,"s":1.0}`, `{"y":3,"s":18446744073709551616}`, `{"y":3,"b":null}`, `{"y":3,"b":5}`,
		`{"y":3} x`, `{"error":5}`, "{\"y\":3,\"b\":\"\xff\"}",
	} {
		if f, err := decodeJSON([]byte(in)); err == nil {
			t.Errorf("json %q accepted as %+v", in, f)
		}
	}
	for _, in := range [][]byte{
		{}, {0xc0}, {0x90}, {0x80}, // nil, empty array, map without y
		{0x81, 0xa1, 'y', 0xa1, '3'},                         // y a string
		{0x82, 0xa1, 'y', 0x03, 0xa1, 's', 0xff},             // s negative
		{0x81, 0xa1, 'y', 0x03, 0x00},                        // trailing byte
		{0x82, 0xa1, 'y', 0x03, 0xa1, 'b', 0xc4, 0x01, 0xff}, // bin body, not UTF-8
		{0x81, 0xa1, 'y'},                                    // truncated
	} {
		if f, err := decodeMsgpack(in); err == nil {
			t.Errorf("msgpack %x accepted as %+v", in, f)
		}
	}
	// Unknown keys are ignored; a bin body that is UTF-8 is a body.
	f, err := decodeMsgpack([]byte{0x83, 0xa1, 'y', 0x03, 0xa1, 'b', 0xc4, 0x02, 'h', 'i', 0xa1, 'z', 0x90})
	if err != nil || f.msg.Body != "hi" {
		t.Fatalf("%+v %v", f, err)
	}
	if _, err := (Message{Type: TypeUser, Body: "\xff"}).AppendJSON(nil); err == nil {
		t.Fatal("invalid UTF-8 encoded")
	}
	var m Message
	if err := m.UnmarshalJSON([]byte(`{"error":"replaced"}`)); !errors.As(err, new(*StreamError)) {
		t.Fatalf("UnmarshalJSON of an error: %v", err)
	}
}

func TestBackoffDelay(t *testing.T) {
	base, cap := 500*time.Millisecond, 30*time.Second
	for n, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second} {
		if got := backoffDelay(n, base, cap, 0.999999); got > want || got < want*99/100 {
			t.Errorf("attempt %d: ceiling %v, want %v", n, got, want)
		}
		if got := backoffDelay(n, base, cap, 0); got != 0 {
			t.Errorf("attempt %d: floor %v, want 0 (full jitter)", n, got)
		}
	}
	for _, n := range []int{6, 7, 20, 100, 2000} {
		if got := backoffDelay(n, base, cap, 0.5); got != cap/2 {
			t.Errorf("attempt %d: %v, want half the cap", n, got)
		}
	}
}

// TestWSScanner: the frame tracker under gorilla finds a 1-byte close
// payload at any split and passes everything else.
func TestWSScanner(t *testing.T) {
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
	good := head + string(wsFrame(1, []byte(`{"y":0}`))) + string(wsFrame(1, bytes.Repeat([]byte("x"), 300))) +
		string(wsFrame(2, bytes.Repeat([]byte("y"), 70000))) + string(wsFrame(8, []byte{3, 0xe8}))
	bad := good[:len(good)-4] + "\x88\x01\x03"
	for split := 0; split <= len(good); split += 7 {
		var s wsScanner
		if _, err := s.feed([]byte(good[:split])); err != nil {
			t.Fatal(err)
		}
		if _, err := s.feed([]byte(good[split:])); err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
	}
	for split := 0; split <= len(bad); split += 7 {
		var s wsScanner
		_, err1 := s.feed([]byte(bad[:split]))
		off, err2 := s.feed([]byte(bad[split:]))
		if err1 == nil && err2 == nil {
			t.Fatalf("split %d: the 1-byte close passed", split)
		}
		if err2 != nil && split+off >= len(bad)-1 {
			t.Fatalf("split %d: offset %d lets the bad header through", split, off)
		}
	}
}
