package io.ipush.client;

import java.io.ByteArrayOutputStream;
import java.util.Objects;

/**
 * Parses a {@code text/event-stream} (the HTML Living Standard's event stream) fed in fragments:
 * lines end with LF, CRLF or CR; {@code id}, {@code event} and {@code data} fields (several {@code
 * data} lines join with LF); {@code :} comments; a blank line dispatches. No I/O.
 */
public final class SseParser {
  /** The longest line accepted (a message of 16 MiB fits). */
  public static final int MAX_LINE = 17 * 1024 * 1024;

  /** One dispatched event: {@code id} and {@code event} are null when the event had none. */
  public static final class Event {
    public final String id;
    public final String event;
    public final String data;

    public Event(String id, String event, String data) {
      this.id = id;
      this.event = event;
      this.data = data;
    }

    @Override
    public boolean equals(Object o) {
      if (!(o instanceof Event)) {
        return false;
      }
      Event e = (Event) o;
      return Objects.equals(id, e.id) && Objects.equals(event, e.event) && data.equals(e.data);
    }

    @Override
    public int hashCode() {
      return Objects.hash(id, event, data);
    }

    @Override
    public String toString() {
      return "Event{id=" + id + ", event=" + event + ", data=" + data + "}";
    }
  }

  /** Receives each dispatched event. */
  public interface Sink {
    void onEvent(Event e) throws ProtocolException;
  }

  private final ByteArrayOutputStream line = new ByteArrayOutputStream();
  private boolean lastWasCr;
  private String id;
  private String event;
  private StringBuilder data;
  private boolean bom = true;

  /** Feeds bytes; every event completed by them goes to {@code sink}, in order. */
  public void feed(byte[] b, int off, int len, Sink sink) throws ProtocolException {
    for (int i = off; i < off + len; i++) {
      byte c = b[i];
      if (c == '\n' && lastWasCr) {
        lastWasCr = false;
        continue;
      }
      lastWasCr = c == '\r';
      if (c == '\n' || c == '\r') {
        endLine(sink);
      } else {
        if (line.size() >= MAX_LINE) {
          throw new ProtocolException("event stream line longer than " + MAX_LINE + " bytes");
        }
        line.write(c);
      }
    }
  }

  private void endLine(Sink sink) throws ProtocolException {
    byte[] raw = line.toByteArray();
    line.reset();
    String s = Codec.utf8(raw, 0, raw.length);
    if (bom) {
      bom = false;
      if (s.startsWith("\uFEFF")) {
        s = s.substring(1);
      }
    }
    if (s.isEmpty()) {
      dispatch(sink);
      return;
    }
    if (s.charAt(0) == ':') {
      return; // comment
    }
    String field;
    String value;
    int colon = s.indexOf(':');
    if (colon < 0) {
      field = s;
      value = "";
    } else {
      field = s.substring(0, colon);
      value = s.substring(colon + 1);
      if (value.startsWith(" ")) {
        value = value.substring(1);
      }
    }
    switch (field) {
      case "data":
        if (data == null) {
          data = new StringBuilder();
        } else {
          data.append('\n');
        }
        data.append(value);
        break;
      case "event":
        event = value;
        break;
      case "id":
        if (value.indexOf('\0') < 0) {
          id = value;
        }
        break;
      default:
        // "retry" and unknown fields: nothing for a push client to do.
        break;
    }
  }

  private void dispatch(Sink sink) throws ProtocolException {
    String d = data == null ? null : data.toString();
    Event e = d == null ? null : new Event(id, event, d);
    id = null;
    event = null;
    data = null;
    if (e != null) {
      sink.onEvent(e);
    }
  }
}
