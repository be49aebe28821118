package ipush

// framing.go owns the two byte-level parsers of the SDK: the chunked transfer
// coding of the /connect stream and the Server-Sent Events line format. Both
// are pure (no I/O) and are fed whatever bytes have arrived.

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// errNeedMore says the input holds no complete unit yet.
var errNeedMore = errors.New("need more bytes")

// maxChunkLine bounds a chunk-size line (size, extensions, CRLF).
const maxChunkLine = 1024

// parseChunk parses the chunk at the start of b (chunked transfer coding,
// RFC 9112 §7.1). It returns the payload (aliasing b), the number of bytes the
// chunk took, and last=true for the zero-size last chunk (with its trailer
// section). errNeedMore means b holds only the start of a chunk. A payload over
// max bytes is an error.
func parseChunk(b []byte, max int) (payload []byte, n int, last bool, err error) {
	i := 0
	var size uint64
	for ; i < len(b); i++ {
		d, ok := hexVal(b[i])
		if !ok {
			break
		}
		if i >= 16 {
			return nil, 0, false, errors.New("bad chunk size: too many digits")
		}
		size = size<<4 | uint64(d)
	}
	if i == len(b) {
		return nil, 0, false, errNeedMore
	}
	if i == 0 {
		return nil, 0, false, fmt.Errorf("bad chunk size: %q", clip(b))
	}
	// Optional chunk extensions (";name=value"), ignored, up to CRLF.
	j := i
	if b[j] == ';' {
		for j < len(b) && b[j] != '\r' && b[j] != '\n' {
			j++
		}
	}
	if j+2 > len(b) {
		if j > maxChunkLine {
			return nil, 0, false, errors.New("bad chunk size: line too long")
		}
		return nil, 0, false, errNeedMore
	}
	if b[j] != '\r' || b[j+1] != '\n' {
		return nil, 0, false, fmt.Errorf("bad chunk size line: %q", clip(b))
	}
	head := j + 2
	if size == 0 {
		// Last chunk: trailer fields, each ending in CRLF, then an empty line.
		k := head
		for {
			e := bytes.Index(b[k:], []byte("\r\n"))
			if e < 0 {
				if len(b)-head > maxChunkLine {
					return nil, 0, false, errors.New("bad chunked trailer: too long")
				}
				return nil, 0, false, errNeedMore
			}
			if e == 0 {
				return nil, k + 2, true, nil
			}
			k += e + 2
		}
	}
	if size > uint64(max) {
		return nil, 0, false, fmt.Errorf("chunk of %d bytes is over the limit of %d", size, max)
	}
	end := head + int(size)
	if end+2 > len(b) {
		return nil, 0, false, errNeedMore
	}
	if b[end] != '\r' || b[end+1] != '\n' {
		return nil, 0, false, errors.New("missing CRLF after chunk data")
	}
	return b[head:end], end + 2, false, nil
}

// appendChunk appends payload framed as one chunk.
func appendChunk(dst, payload []byte) []byte {
	dst = strconv.AppendUint(dst, uint64(len(payload)), 16)
	dst = append(dst, '\r', '\n')
	dst = append(dst, payload...)
	return append(dst, '\r', '\n')
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func clip(b []byte) []byte {
	if len(b) > 24 {
		return b[:24]
	}
	return b
}

// sseEvent is one dispatched Server-Sent Event.
type sseEvent struct {
	ID    string
	HasID bool
	Event string
	Data  string
}

// sseParser turns an event stream (WHATWG HTML "event stream interpretation")
// into events. Lines end in LF, CRLF or CR, also when the CR and LF arrive in
// different feeds. A line longer than max bytes is an error.
type sseParser struct {
	max    int
	line   []byte
	skipLF bool // the previous feed ended in CR: a leading LF belongs to it
	cur    sseEvent
	data   []byte
	hasDat bool
}

// feed consumes p and returns the events completed by it.
func (p *sseParser) feed(b []byte) ([]sseEvent, error) {
	var out []sseEvent
	for len(b) > 0 {
		if p.skipLF {
			p.skipLF = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := bytes.IndexAny(b, "\r\n")
		if i < 0 {
			if len(p.line)+len(b) > p.max {
				return out, fmt.Errorf("SSE line over %d bytes", p.max)
			}
			p.line = append(p.line, b...)
			return out, nil
		}
		if len(p.line)+i > p.max {
			return out, fmt.Errorf("SSE line over %d bytes", p.max)
		}
		p.line = append(p.line, b[:i]...)
		if b[i] == '\r' {
			if i+1 < len(b) {
				if b[i+1] == '\n' {
					i++
				}
			} else {
				p.skipLF = true
			}
		}
		b = b[i+1:]
		if ev, ok := p.processLine(p.line); ok {
			out = append(out, ev)
		}
		p.line = p.line[:0]
	}
	return out, nil
}

func (p *sseParser) processLine(line []byte) (sseEvent, bool) {
	if len(line) == 0 {
		ev, ok := p.cur, p.hasDat
		if ok {
			ev.Data = string(p.data)
		}
		p.cur, p.data, p.hasDat = sseEvent{}, p.data[:0], false
		return ev, ok
	}
	if line[0] == ':' {
		return sseEvent{}, false // comment
	}
	field, value := line, []byte(nil)
	if c := bytes.IndexByte(line, ':'); c >= 0 {
		field, value = line[:c], line[c+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		if p.hasDat {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasDat = true
	case "event":
		p.cur.Event = string(value)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.cur.ID, p.cur.HasID = string(value), true
		}
	}
	return sseEvent{}, false
}
