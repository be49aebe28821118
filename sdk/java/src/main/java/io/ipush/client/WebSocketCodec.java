package io.ipush.client;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.Base64;
import java.util.Random;

/**
 * RFC 6455 framing for a client: the handshake key and its accept value, masked frame encoding, and
 * a frame reader fed in fragments that reassembles fragmented messages and validates control frames
 * and close codes. No I/O. A reader is owned by one thread.
 */
public final class WebSocketCodec {
  private WebSocketCodec() {}

  public static final int OP_CONTINUATION = 0x0;
  public static final int OP_TEXT = 0x1;
  public static final int OP_BINARY = 0x2;
  public static final int OP_CLOSE = 0x8;
  public static final int OP_PING = 0x9;
  public static final int OP_PONG = 0xA;

  public static final int CLOSE_NORMAL = 1000;
  public static final int CLOSE_GOING_AWAY = 1001;
  public static final int CLOSE_PROTOCOL_ERROR = 1002;
  public static final int CLOSE_NO_STATUS = 1005;
  public static final int CLOSE_INVALID_DATA = 1007;
  public static final int CLOSE_POLICY = 1008;
  public static final int CLOSE_TOO_BIG = 1009;

  /** "Service restart": ipush's move signal, the reason being {@code {"error":"moved",...}}. */
  public static final int CLOSE_SERVICE_RESTART = 1012;

  private static final String GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

  /** A fresh {@code Sec-WebSocket-Key}: 16 random bytes, base64. */
  public static String newKey(Random rnd) {
    byte[] k = new byte[16];
    rnd.nextBytes(k);
    return Base64.getEncoder().encodeToString(k);
  }

  /** The {@code Sec-WebSocket-Accept} a server must answer for {@code key}. */
  public static String acceptFor(String key) {
    try {
      MessageDigest sha1 = MessageDigest.getInstance("SHA-1");
      byte[] d = sha1.digest((key + GUID).getBytes(StandardCharsets.US_ASCII));
      return Base64.getEncoder().encodeToString(d);
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("SHA-1 unavailable", e);
    }
  }

  /**
   * Encodes one frame. {@code mask} is the 4-byte masking key (clients must mask every frame), or
   * {@code null} for an unmasked (server) frame.
   */
  public static byte[] encodeFrame(int opcode, boolean fin, byte[] payload, byte[] mask) {
    int n = payload.length;
    int hdr = 2 + (n < 126 ? 0 : n <= 0xFFFF ? 2 : 8) + (mask == null ? 0 : 4);
    byte[] out = new byte[hdr + n];
    out[0] = (byte) ((fin ? 0x80 : 0) | (opcode & 0x0F));
    int p = 2;
    int maskBit = mask == null ? 0 : 0x80;
    if (n < 126) {
      out[1] = (byte) (maskBit | n);
    } else if (n <= 0xFFFF) {
      out[1] = (byte) (maskBit | 126);
      out[2] = (byte) (n >>> 8);
      out[3] = (byte) n;
      p = 4;
    } else {
      out[1] = (byte) (maskBit | 127);
      long ln = n;
      for (int i = 0; i < 8; i++) {
        out[2 + i] = (byte) (ln >>> (56 - 8 * i));
      }
      p = 10;
    }
    if (mask == null) {
      System.arraycopy(payload, 0, out, p, n);
    } else {
      System.arraycopy(mask, 0, out, p, 4);
      p += 4;
      for (int i = 0; i < n; i++) {
        out[p + i] = (byte) (payload[i] ^ mask[i & 3]);
      }
    }
    return out;
  }

  /** A close frame's payload: the code (big-endian) and a UTF-8 reason cut to 123 bytes. */
  public static byte[] closePayload(int code, String reason) {
    byte[] r = reason == null ? new byte[0] : reason.getBytes(StandardCharsets.UTF_8);
    int n = Math.min(r.length, 123);
    byte[] p = new byte[2 + n];
    p[0] = (byte) (code >>> 8);
    p[1] = (byte) code;
    System.arraycopy(r, 0, p, 2, n);
    return p;
  }

  /** True for close codes a peer may send (RFC 6455 §7.4, and the registered 1012–1014). */
  public static boolean validCloseCode(int code) {
    if (code >= 3000 && code <= 4999) {
      return true;
    }
    switch (code) {
      case 1000:
      case 1001:
      case 1002:
      case 1003:
      case 1007:
      case 1008:
      case 1009:
      case 1010:
      case 1011:
      case 1012:
      case 1013:
      case 1014:
        return true;
      default:
        return false;
    }
  }

  /** What the reader produced: a whole data message, a ping, a pong or a close. */
  public static final class Event {
    /**
     * {@link #OP_TEXT}, {@link #OP_BINARY}, {@link #OP_PING}, {@link #OP_PONG} or {@link
     * #OP_CLOSE}.
     */
    public final int opcode;

    public final byte[] payload;

    /** For a close: the code ({@link #CLOSE_NO_STATUS} when the frame had none) and reason. */
    public final int closeCode;

    public final String closeReason;

    Event(int opcode, byte[] payload, int closeCode, String closeReason) {
      this.opcode = opcode;
      this.payload = payload;
      this.closeCode = closeCode;
      this.closeReason = closeReason;
    }
  }

  /** One raw frame as parsed (before reassembly), with the bytes it took. */
  public static final class Frame {
    public final boolean fin;
    public final int rsv;
    public final int opcode;
    public final boolean masked;
    public final byte[] payload;
    public final int length;

    Frame(boolean fin, int rsv, int opcode, boolean masked, byte[] payload, int length) {
      this.fin = fin;
      this.rsv = rsv;
      this.opcode = opcode;
      this.masked = masked;
      this.payload = payload;
      this.length = length;
    }
  }

  /**
   * Parses one frame at {@code b[off..off+len)} (unmasking it), or returns {@code null} when more
   * bytes are needed. Checks only what the header alone can tell (sizes); see {@link Reader}.
   */
  public static Frame parseFrame(byte[] b, int off, int len, long maxPayload)
      throws WebSocketProtocolException {
    if (len < 2) {
      return null;
    }
    int b0 = b[off] & 0xff;
    int b1 = b[off + 1] & 0xff;
    boolean masked = (b1 & 0x80) != 0;
    long n = b1 & 0x7f;
    int p = 2;
    if (n == 126) {
      if (len < 4) {
        return null;
      }
      n = ((b[off + 2] & 0xffL) << 8) | (b[off + 3] & 0xffL);
      p = 4;
    } else if (n == 127) {
      if (len < 10) {
        return null;
      }
      n = 0;
      for (int i = 0; i < 8; i++) {
        n = (n << 8) | (b[off + 2 + i] & 0xffL);
      }
      if (n < 0) {
        throw new WebSocketProtocolException(CLOSE_PROTOCOL_ERROR, "64-bit length with MSB set");
      }
      p = 10;
    }
    int opcode = b0 & 0x0f;
    if (opcode >= 8 && n > 125) {
      throw new WebSocketProtocolException(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes");
    }
    if (n > maxPayload) {
      throw new WebSocketProtocolException(CLOSE_TOO_BIG, "frame of " + n + " bytes is too big");
    }
    byte[] mask = null;
    if (masked) {
      if (len < p + 4) {
        return null;
      }
      mask = Arrays.copyOfRange(b, off + p, off + p + 4);
      p += 4;
    }
    if (len < p + n) {
      return null;
    }
    byte[] payload = Arrays.copyOfRange(b, off + p, off + p + (int) n);
    if (mask != null) {
      for (int i = 0; i < payload.length; i++) {
        payload[i] ^= mask[i & 3];
      }
    }
    return new Frame((b0 & 0x80) != 0, (b0 >> 4) & 0x7, opcode, masked, payload, p + (int) n);
  }

  /**
   * Reads server frames fed in fragments: refuses masked frames, reserved bits and opcodes,
   * fragmented control frames and bad close payloads (1002), invalid UTF-8 in text messages and
   * close reasons (1007), messages over the limit (1009); reassembles fragments.
   */
  public static final class Reader {
    private final long maxMessage;
    private final boolean expectMasked;
    private byte[] buf = new byte[256];
    private int start;
    private int end;
    private int fragOpcode = -1;
    private final ByteArrayOutputStream frag = new ByteArrayOutputStream();

    /** A client's reader: server frames must be unmasked. */
    public Reader(long maxMessage) {
      this(maxMessage, false);
    }

    /** {@code expectMasked}: true to read frames a client sent (they must be masked). */
    public Reader(long maxMessage, boolean expectMasked) {
      this.maxMessage = maxMessage;
      this.expectMasked = expectMasked;
    }

    public void feed(byte[] b, int off, int len) {
      if (end + len > buf.length) {
        int live = end - start;
        if (live + len <= buf.length) {
          System.arraycopy(buf, start, buf, 0, live);
        } else {
          byte[] n = new byte[Math.max(buf.length * 2, live + len)];
          System.arraycopy(buf, start, n, 0, live);
          buf = n;
        }
        start = 0;
        end = live;
      }
      System.arraycopy(b, off, buf, end, len);
      end += len;
    }

    /** The next event, or {@code null} when more bytes are needed. */
    public Event next() throws WebSocketProtocolException {
      while (true) {
        Frame f = parseFrame(buf, start, end - start, maxMessage);
        if (f == null) {
          if (start == end) {
            start = 0;
            end = 0;
          }
          return null;
        }
        start += f.length;
        if (f.rsv != 0) {
          throw new WebSocketProtocolException(CLOSE_PROTOCOL_ERROR, "reserved bits set");
        }
        if (f.masked != expectMasked) {
          throw new WebSocketProtocolException(
              CLOSE_PROTOCOL_ERROR, f.masked ? "masked server frame" : "unmasked client frame");
        }
        switch (f.opcode) {
          case OP_TEXT:
          case OP_BINARY:
            if (fragOpcode >= 0) {
              throw new WebSocketProtocolException(
                  CLOSE_PROTOCOL_ERROR, "new data frame inside a fragmented message");
            }
            if (f.fin) {
              return data(f.opcode, f.payload);
            }
            fragOpcode = f.opcode;
            frag.reset();
            frag.write(f.payload, 0, f.payload.length);
            break;
          case OP_CONTINUATION:
            if (fragOpcode < 0) {
              throw new WebSocketProtocolException(
                  CLOSE_PROTOCOL_ERROR, "continuation frame without a message");
            }
            if ((long) frag.size() + f.payload.length > maxMessage) {
              throw new WebSocketProtocolException(CLOSE_TOO_BIG, "message too big");
            }
            frag.write(f.payload, 0, f.payload.length);
            if (f.fin) {
              int op = fragOpcode;
              fragOpcode = -1;
              byte[] whole = frag.toByteArray();
              frag.reset();
              return data(op, whole);
            }
            break;
          case OP_PING:
          case OP_PONG:
            if (!f.fin) {
              throw new WebSocketProtocolException(
                  CLOSE_PROTOCOL_ERROR, "fragmented control frame");
            }
            return new Event(f.opcode, f.payload, 0, null);
          case OP_CLOSE:
            if (!f.fin) {
              throw new WebSocketProtocolException(
                  CLOSE_PROTOCOL_ERROR, "fragmented control frame");
            }
            return close(f.payload);
          default:
            throw new WebSocketProtocolException(
                CLOSE_PROTOCOL_ERROR, "reserved opcode 0x" + Integer.toHexString(f.opcode));
        }
      }
    }

    private static Event data(int opcode, byte[] payload) throws WebSocketProtocolException {
      if (opcode == OP_TEXT) {
        try {
          Codec.utf8(payload, 0, payload.length);
        } catch (ProtocolException e) {
          throw new WebSocketProtocolException(CLOSE_INVALID_DATA, "text message is not UTF-8");
        }
      }
      return new Event(opcode, payload, 0, null);
    }

    private static Event close(byte[] p) throws WebSocketProtocolException {
      if (p.length == 0) {
        return new Event(OP_CLOSE, p, CLOSE_NO_STATUS, "");
      }
      if (p.length == 1) {
        throw new WebSocketProtocolException(CLOSE_PROTOCOL_ERROR, "close payload of one byte");
      }
      int code = ((p[0] & 0xff) << 8) | (p[1] & 0xff);
      if (!validCloseCode(code)) {
        throw new WebSocketProtocolException(CLOSE_PROTOCOL_ERROR, "invalid close code " + code);
      }
      String reason;
      try {
        reason = Codec.utf8(p, 2, p.length - 2);
      } catch (ProtocolException e) {
        throw new WebSocketProtocolException(CLOSE_INVALID_DATA, "close reason is not UTF-8");
      }
      return new Event(OP_CLOSE, p, code, reason);
    }
  }
}
