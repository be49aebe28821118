package ipush

// fuzz_test.go: fuzz targets of the parsers (`go test -fuzz=FuzzParseChunk`
// and so on); plain `go test` runs their seeds.

import (
	"reflect"
	"testing"
)

func FuzzParseChunk(f *testing.F) {
	for _, s := range []string{"7\r\n{\"y\":0}\r\n", "0\r\n\r\n", "a;x=y\r\n0123456789\r\n", "zz\r\n", "ffffffffffffffff\r\n", "0\r\nT: v\r\n\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		payload, n, last, err := parseChunk(b, 1<<16)
		if err != nil {
			if n != 0 || payload != nil {
				t.Fatalf("error with output: %d %q", n, payload)
			}
			return
		}
		if n <= 0 || n > len(b) || len(payload) > n || (last && payload != nil) {
			t.Fatalf("bad result n=%d last=%v payload=%q for %q", n, last, payload, b)
		}
		// A prefix of a complete chunk needs more bytes; it is never a different chunk.
		for k := 0; k < n; k++ {
			p2, _, _, err2 := parseChunk(b[:k], 1<<16)
			if err2 == nil && !last {
				t.Fatalf("prefix %d of %q parsed as %q", k, b[:n], p2)
			}
		}
	})
}

func FuzzSSEParser(f *testing.F) {
	f.Add([]byte("id: 1\ndata: {\"y\":0}\n\n"), 3)
	f.Add([]byte("event: moved\r\ndata: x\r\n\r\n:c\r\r"), 7)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		whole := sseParser{max: 1 << 16}
		want, err := whole.feed(b)
		if err != nil {
			return
		}
		if split < 0 {
			split = -split
		}
		split %= len(b) + 1
		p := sseParser{max: 1 << 16}
		got1, err1 := p.feed(b[:split])
		got2, err2 := p.feed(b[split:])
		if err1 != nil || err2 != nil {
			t.Fatalf("split %d: %v %v", split, err1, err2)
		}
		if got := append(got1, got2...); !reflect.DeepEqual(got, want) && !(len(got) == 0 && len(want) == 0) {
			t.Fatalf("split %d of %q: %+v, whole: %+v", split, b, got, want)
		}
	})
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"y":3,"f":"a","t":"b","b":"c","s":1}`))
	f.Add([]byte{0x85, 0xa1, 'y', 0x03, 0xa1, 'f', 0xa1, 'a', 0xa1, 't', 0xa1, 'b', 0xa1, 'b', 0xa1, 'c', 0xa1, 's', 0x01})
	f.Add([]byte(`{"error":"moved","location":"http://h:1/connect"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range []Codec{JSON, MsgPack} {
			fr, err := c.decode(b)
			if err != nil || fr.end != nil {
				continue
			}
			// What decodes re-encodes, and decodes to the same message.
			enc, err := c.encode(nil, fr.msg)
			if err != nil {
				t.Fatalf("%s: %+v does not encode: %v", c, fr.msg, err)
			}
			again, err := c.decode(enc)
			if err != nil || !reflect.DeepEqual(again.msg, normalized(fr.msg)) {
				t.Fatalf("%s: %+v -> %q -> %+v %v", c, fr.msg, enc, again.msg, err)
			}
		}
	})
}

// normalized is m as its encoding represents it (an empty body is written
// only on user and channel messages).
func normalized(m Message) Message {
	if !m.hasBody() {
		m.Body = ""
	}
	return m
}

func FuzzWSScanner(f *testing.F) {
	f.Add([]byte("HTTP/1.1 101 OK\r\n\r\n\x81\x02hi\x88\x02\x03\xe8"), 5)
	f.Add([]byte("HTTP/1.1 101 OK\r\n\r\n\x81\x7e\x00\x03abc\x88\x01\x03"), 9)
	f.Fuzz(func(t *testing.T, b []byte, split int) {
		var whole wsScanner
		_, werr := whole.feed(b)
		if split < 0 {
			split = -split
		}
		split %= len(b) + 1
		var s wsScanner
		_, err1 := s.feed(b[:split])
		var err2 error
		if err1 == nil {
			_, err2 = s.feed(b[split:])
		}
		if (werr == nil) != (err1 == nil && err2 == nil) {
			t.Fatalf("split %d of %q: whole %v, pieces %v %v", split, b, werr, err1, err2)
		}
	})
}
