package ipush

// batch.go owns PublishBatch: many publishes in POST /pub/batch requests
// (NDJSON lines in, one /pub answer a line out), run on the caller's goroutine.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// The server's defaults for --max_batch_lines and --max_batch_bytes.
const (
	DefaultMaxBatchLines = 10000
	DefaultMaxBatchBytes = 16 << 20
)

// BatchItem is one message of PublishBatch: exactly one of To (a user) and
// Channel, with WithTTL and WithIdempotencyKey as for Publish.
type BatchItem struct {
	To, Channel string
	From, Body  string
	Opts        []PublishOption
}

// BatchResult is the outcome of one item: Err is nil when the message was
// stored ("ok"), an *APIError with the status and reason /pub would have
// answered for it, or the error of a request that failed as a whole.
type BatchResult struct {
	Err error
}

// batchLine is one NDJSON line of POST /pub/batch.
type batchLine struct {
	To             string  `json:"to,omitempty"`
	Channel        string  `json:"channel,omitempty"`
	From           string  `json:"from"`
	TTL            *uint64 `json:"ttl,omitempty"`
	B              string  `json:"b"`
	IdempotencyKey string  `json:"idempotency_key,omitempty"`
}

// PublishBatch publishes items with POST /pub/batch and returns one result
// per item, in item order. Items are checked as Publish checks its arguments:
// a bad one is an error and nothing is sent. A list over MaxBatchLines items
// or MaxBatchBytes bytes goes as several requests, one after the other. A
// request that fails as a whole (network, context, a 4xx/5xx) gives its error
// to each of its items and to every later item, which is not sent (so no
// later message overtakes a failed one).
func (a *Admin) PublishBatch(ctx context.Context, items []BatchItem) ([]BatchResult, error) {
	lines := make([][]byte, len(items))
	for i, it := range items {
		l, err := encodeBatchItem(it)
		if err != nil {
			return nil, fmt.Errorf("ipush: batch item %d: %w", i, err)
		}
		lines[i] = l
	}
	out := make([]BatchResult, 0, len(items))
	for _, run := range batchRuns(lines, orDefault(a.MaxBatchLines, DefaultMaxBatchLines), orDefault(a.MaxBatchBytes, DefaultMaxBatchBytes)) {
		res, err := a.postBatch(ctx, run)
		if err != nil {
			for len(out) < len(items) {
				out = append(out, BatchResult{Err: err})
			}
			break
		}
		out = append(out, res...)
	}
	return out, nil
}

// encodeBatchItem checks it as publish does and returns its line (with the
// newline).
func encodeBatchItem(it BatchItem) ([]byte, error) {
	if (it.To == "") == (it.Channel == "") {
		return nil, fmt.Errorf("give exactly one of To and Channel")
	}
	q := url.Values{}
	if err := checkPublish(q, it.Body, it.Opts); err != nil {
		return nil, err
	}
	l := batchLine{To: it.To, Channel: it.Channel, From: it.From, B: it.Body, IdempotencyKey: q.Get("idempotency_key")}
	if s := q.Get("ttl"); s != "" {
		ttl, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, err
		}
		l.TTL = &ttl
	}
	b, err := json.Marshal(l)
	return append(b, '\n'), err
}

// batchRuns cuts lines into consecutive runs of at most maxLines lines and
// maxBytes bytes (a bigger line goes alone: the server answers it).
func batchRuns(lines [][]byte, maxLines, maxBytes int) [][][]byte {
	var runs [][][]byte
	var run [][]byte
	size := 0
	for _, l := range lines {
		if len(run) > 0 && (len(run) == maxLines || size+len(l) > maxBytes) {
			runs, run, size = append(runs, run), nil, 0
		}
		run = append(run, l)
		size += len(l)
	}
	if len(run) > 0 {
		runs = append(runs, run)
	}
	return runs
}

// postBatch sends one request of lines and decodes its answer lines.
func (a *Admin) postBatch(ctx context.Context, lines [][]byte) ([]BatchResult, error) {
	u := *a.base
	u.Path += "/pub/batch"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(bytes.Join(lines, nil)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	_, data, err := a.roundTrip(req)
	if err != nil {
		return nil, err
	}
	var answers [][]byte
	for _, l := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			answers = append(answers, l)
		}
	}
	if len(answers) != len(lines) {
		return nil, fmt.Errorf("ipush: /pub/batch: %d answers to %d lines", len(answers), len(lines))
	}
	out := make([]BatchResult, len(answers))
	for i, l := range answers {
		out[i] = BatchResult{Err: batchAnswer(l)}
	}
	return out, nil
}

// batchAnswer is nil for {"result":...,"status":200} and an *APIError for
// {"error":...,"status":N}.
func batchAnswer(line []byte) error {
	var a struct {
		Result json.RawMessage `json:"result"`
		Error  *string         `json:"error"`
		Status int             `json:"status"`
	}
	if err := json.Unmarshal(line, &a); err != nil {
		return fmt.Errorf("ipush: /pub/batch: bad answer line %q: %w", line, err)
	}
	if a.Error != nil {
		return &APIError{Status: a.Status, Reason: *a.Error}
	}
	if a.Result == nil {
		return fmt.Errorf("ipush: /pub/batch: answer line without result: %s", line)
	}
	return nil
}

func orDefault(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}
