package ipush

// admin.go owns the admin API client (the admin port): publish, channel
// membership, offline messages, shard lookup, stats and health (batch
// publishing is in batch.go).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Admin is a client of the admin HTTP API. Any node answers any request and
// routes it to the owner of the user itself. Its methods are safe for
// concurrent use.
type Admin struct {
	base *url.URL
	hc   *http.Client
	// MaxBatchLines and MaxBatchBytes bound one POST /pub/batch request of
	// PublishBatch (0: the server's defaults, 10000 lines and 16 MiB). Set
	// them before use, to the server's --max_batch_lines/--max_batch_bytes
	// if it runs with lower ones.
	MaxBatchLines, MaxBatchBytes int
}

// NewAdmin makes an admin client for baseURL ("http://127.0.0.1:9001").
// hc may be nil (http.DefaultClient).
func NewAdmin(baseURL string, hc *http.Client) (*Admin, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("ipush: bad admin URL %q: %w", baseURL, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("ipush: bad admin URL %q: want http(s)://host:port", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawQuery, u.Fragment = "", ""
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Admin{base: u, hc: hc}, nil
}

// PublishOption is an optional parameter of Publish and PublishChannel.
type PublishOption func(*publishOpts) error

type publishOpts struct {
	q url.Values
}

// WithTTL sets the message's time to live (whole seconds; default on the
// server 7 days). WithTTL(0) publishes without a seq: not stored, delivered
// only to a user online now.
func WithTTL(ttl time.Duration) PublishOption {
	return func(o *publishOpts) error {
		if ttl < 0 || ttl%time.Second != 0 {
			return fmt.Errorf("ipush: ttl %v must be a non-negative whole number of seconds", ttl)
		}
		o.q.Set("ttl", strconv.FormatInt(int64(ttl/time.Second), 10))
		return nil
	}
}

// WithIdempotencyKey passes &idempotency_key=K, so that a retried publish
// within the server's window answers the first result without publishing
// again (the same key with another body: 422).
func WithIdempotencyKey(key string) PublishOption {
	return func(o *publishOpts) error {
		if key == "" {
			return errors.New("ipush: empty idempotency key")
		}
		o.q.Set("idempotency_key", key)
		return nil
	}
}

// Publish sends body as a user message (type 3) from `from` to user `to`.
func (a *Admin) Publish(ctx context.Context, to, from, body string, opts ...PublishOption) error {
	return a.publish(ctx, url.Values{"to": {to}, "from": {from}}, body, opts)
}

// PublishChannel sends body as a channel message (type 4) from `from` to
// every member of channel, each with its own seq.
func (a *Admin) PublishChannel(ctx context.Context, channel, from, body string, opts ...PublishOption) error {
	return a.publish(ctx, url.Values{"channel": {channel}, "from": {from}}, body, opts)
}

func (a *Admin) publish(ctx context.Context, q url.Values, body string, opts []PublishOption) error {
	if err := checkPublish(q, body, opts); err != nil {
		return err
	}
	var res string
	return a.do(ctx, http.MethodPost, "/pub", q, strings.NewReader(body), &res)
}

// checkPublish checks body and applies opts to q, as every publish does.
func checkPublish(q url.Values, body string, opts []PublishOption) error {
	if !utf8.ValidString(body) {
		return errors.New("ipush: body is not valid UTF-8")
	}
	o := publishOpts{q: q}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return err
		}
	}
	return nil
}

// Sub subscribes uid to channel cid.
func (a *Admin) Sub(ctx context.Context, uid, cid string) error {
	var res string
	return a.do(ctx, http.MethodGet, "/sub", url.Values{"uid": {uid}, "cid": {cid}}, nil, &res)
}

// Unsub unsubscribes uid from channel cid.
func (a *Admin) Unsub(ctx context.Context, uid, cid string) error {
	var res string
	return a.do(ctx, http.MethodGet, "/unsub", url.Values{"uid": {uid}, "cid": {cid}}, nil, &res)
}

// Msg returns uid's offline messages (seq above its last ack, unexpired; the
// newest --max_offline_msg_num), in ascending seq.
func (a *Admin) Msg(ctx context.Context, uid string) ([]Message, error) {
	var res []string
	if err := a.do(ctx, http.MethodGet, "/msg", url.Values{"uid": {uid}}, nil, &res); err != nil {
		return nil, err
	}
	out := make([]Message, 0, len(res))
	for i, s := range res {
		m, err := DecodeMessage(JSON, []byte(strings.TrimRight(s, "\n")))
		if err != nil {
			return nil, fmt.Errorf("ipush: /msg entry %d: %w", i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Shard returns the client address ("HOST:PORT") of uid's node.
func (a *Admin) Shard(ctx context.Context, uid string) (string, error) {
	var res string
	err := a.do(ctx, http.MethodGet, "/shard", url.Values{"uid": {uid}}, nil, &res)
	return res, err
}

// Disconnect ends uid's stream on the server ({"error":"disconnected"}); an
// *APIError with Status 404 when uid is not connected.
func (a *Admin) Disconnect(ctx context.Context, uid string) error {
	var res string
	return a.do(ctx, http.MethodPost, "/disconnect", url.Values{"uid": {uid}}, nil, &res)
}

// Move ends uid's stream with the move signal: its client reconnects at once
// to location, another node's origin ("http://HOST:PORT"), with its own
// credentials. An *APIError with Status 404 when uid is not connected, 400 when
// location is not an origin.
func (a *Admin) Move(ctx context.Context, uid, location string) error {
	var res string
	q := url.Values{"uid": {uid}, "location": {location}}
	return a.do(ctx, http.MethodPost, "/disconnect", q, nil, &res)
}

// Stats is the answer of GET /stats, summed over the node's cores.
type Stats struct {
	AuthFailNumber   uint64 `json:"auth_fail_number"`
	BadRequestNumber uint64 `json:"bad_request_number"`
	ErrorNumber      uint64 `json:"error_number"`
	RecvType         struct {
		Ack   uint64 `json:"ack"`
		Cmsg  uint64 `json:"cmsg"`
		Hb    uint64 `json:"hb"`
		Msg   uint64 `json:"msg"`
		Sub   uint64 `json:"sub"`
		Unsub uint64 `json:"unsub"`
	} `json:"recv_type"`
	RedirectNumber uint64 `json:"redirect_number"`
	// Request counts requests per endpoint ("Connect", "Pub", "Stats", …).
	Request              map[string]uint64 `json:"request"`
	ServerStartDatetime  string            `json:"server_start_datetime"`
	ServerStartTimestamp int64             `json:"server_start_timestamp"` // microseconds since the epoch
	Throughput           struct {
		AvgRecvBytesPerSecond  float64 `json:"avg_recv_bytes_per_second"`
		AvgRecvNumberPerSecond float64 `json:"avg_recv_number_per_second"`
		AvgSendBytesPerSecond  float64 `json:"avg_send_bytes_per_second"`
		AvgSendNumberPerSecond float64 `json:"avg_send_number_per_second"`
		MaxRecvBytesPerSecond  uint64  `json:"max_recv_bytes_per_second"`
		MaxRecvNumberPerSecond uint64  `json:"max_recv_number_per_second"`
		MaxSendBytesPerSecond  uint64  `json:"max_send_bytes_per_second"`
		MaxSendNumberPerSecond uint64  `json:"max_send_number_per_second"`
		TotalRecvBytes         uint64  `json:"total_recv_bytes"`
		TotalRecvNumber        uint64  `json:"total_recv_number"`
		TotalSendBytes         uint64  `json:"total_send_bytes"`
		TotalSendNumber        uint64  `json:"total_send_number"`
	} `json:"throughput"`
	User struct {
		Connect                uint64 `json:"connect"`
		Disconnect             uint64 `json:"disconnect"`
		MaxUserGrowthPerSecond uint64 `json:"max_user_growth_per_second"`
		MaxUserNumber          uint64 `json:"max_user_number"`
		MaxUserReducePerSecond uint64 `json:"max_user_reduce_per_second"`
		Reconnect              uint64 `json:"reconnect"`
		UserNumber             uint64 `json:"user_number"`
	} `json:"user"`
	// Raw is the whole result object, for keys this struct does not name.
	Raw json.RawMessage `json:"-"`
}

// Stats returns GET /stats.
func (a *Admin) Stats(ctx context.Context) (*Stats, error) {
	var raw json.RawMessage
	if err := a.do(ctx, http.MethodGet, "/stats", nil, nil, &raw); err != nil {
		return nil, err
	}
	s := &Stats{Raw: raw}
	if err := json.Unmarshal(raw, s); err != nil {
		return nil, fmt.Errorf("ipush: /stats: %w", err)
	}
	return s, nil
}

// Health is the answer of GET /health.
type Health struct {
	Status  string `json:"status"`
	Node    string `json:"node"`
	Cores   int    `json:"cores"`
	UptimeS int64  `json:"uptime_s"`
	// Peers maps each other node's name to its state ("up", "down", …).
	Peers map[string]string `json:"peers"`
	// Raw is the whole result object.
	Raw json.RawMessage `json:"-"`
}

// Health returns GET /health.
func (a *Admin) Health(ctx context.Context) (*Health, error) {
	var raw json.RawMessage
	if err := a.do(ctx, http.MethodGet, "/health", nil, nil, &raw); err != nil {
		return nil, err
	}
	h := &Health{Raw: raw}
	if err := json.Unmarshal(raw, h); err != nil {
		return nil, fmt.Errorf("ipush: /health: %w", err)
	}
	return h, nil
}

// do runs one request and decodes {"result":...} into result; a 4xx/5xx (or
// an {"error":...} body) is an *APIError.
func (a *Admin) do(ctx context.Context, method, path string, q url.Values, body io.Reader, result any) error {
	u := *a.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	status, data, err := a.roundTrip(req)
	if err != nil {
		return err
	}
	var env struct {
		Result json.RawMessage `json:"result"`
		Error  *string         `json:"error"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return fmt.Errorf("ipush: %s %s: bad answer: %w", method, path, err)
	}
	if env.Error != nil {
		return &APIError{Status: status, Reason: *env.Error}
	}
	if env.Result == nil {
		return fmt.Errorf("ipush: %s %s: answer without result: %s", method, path, bytes.TrimSpace(data))
	}
	if err := json.Unmarshal(env.Result, result); err != nil {
		return fmt.Errorf("ipush: %s %s: unexpected result %s: %w", method, path, env.Result, err)
	}
	return nil
}

// roundTrip sends req and reads the answer (at most 64 MiB); a status of 300
// or more is an *APIError.
func (a *Admin) roundTrip(req *http.Request) (int, []byte, error) {
	req.Header.Set("User-Agent", userAgent)
	resp, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode >= 300 {
		return 0, nil, &APIError{Status: resp.StatusCode, Reason: reasonOf(data, resp.Status)}
	}
	return resp.StatusCode, data, nil
}
