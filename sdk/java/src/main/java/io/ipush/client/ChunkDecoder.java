package io.ipush.client;

import java.util.Arrays;

/**
 * Decodes the chunked transfer coding of a {@code /connect} stream, fed in fragments of any size:
 * each chunk {@code <hex size>[;ext]\r\n<payload>\r\n} is one message, {@code 0\r\n\r\n} (with
 * optional trailers) ends the stream. No I/O. Not thread-safe (one reader thread owns it).
 */
public final class ChunkDecoder {
  /** Largest chunk accepted: the server's largest message (16 MiB) plus room for its framing. */
  public static final int MAX_CHUNK = 16 * 1024 * 1024 + 1024;

  private static final int MAX_LINE = 1024;

  private byte[] buf = new byte[256];
  private int start;
  private int end;
  private boolean ended;
  private boolean inTrailers;

  /** Appends bytes read from the socket. */
  public void feed(byte[] b, int off, int len) {
    if (len == 0) {
      return;
    }
    if (end + len > buf.length) {
      int live = end - start;
      if (live + len <= buf.length && start > 0) {
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

  /**
   * Called at the end of the input (EOF): true for a clean end (the last chunk was read), false
   * when the connection just stopped between chunks.
   *
   * @throws ProtocolException when the input stopped inside a chunk or a size line
   */
  public boolean finish() throws ProtocolException {
    if (!ended && end > start) {
      throw new ProtocolException("connection ended inside a chunk");
    }
    return ended;
  }

  /** True once the last chunk (and its trailer section) has been read. */
  public boolean ended() {
    return ended;
  }

  /**
   * The next whole chunk's payload, or {@code null} when more bytes are needed (or the stream has
   * ended).
   *
   * @throws ProtocolException on a bad size line, a missing CRLF or an oversized chunk
   */
  public byte[] next() throws ProtocolException {
    while (!ended) {
      if (inTrailers) {
        int eol = findCrlf(start);
        if (eol < 0) {
          checkLine();
          return null;
        }
        boolean empty = eol == start;
        start = eol + 2;
        if (empty) {
          ended = true;
        }
        continue;
      }
      int eol = findCrlf(start);
      if (eol < 0) {
        checkLine();
        return null;
      }
      long size = parseSize(start, eol);
      long need = (eol + 2 - start) + size + 2;
      if (size == 0) {
        start = eol + 2;
        inTrailers = true;
        continue;
      }
      if (end - start < need) {
        return null;
      }
      int p = eol + 2;
      int q = p + (int) size;
      if (buf[q] != '\r' || buf[q + 1] != '\n') {
        throw new ProtocolException("chunk of " + size + " bytes not followed by CRLF");
      }
      byte[] payload = Arrays.copyOfRange(buf, p, q);
      start = q + 2;
      return payload;
    }
    return null;
  }

  private void checkLine() throws ProtocolException {
    if (end - start > MAX_LINE) {
      throw new ProtocolException("chunk size line without CRLF in " + MAX_LINE + " bytes");
    }
    // A lone LF or junk in a size line is refused before the CRLF arrives.
    for (int i = start; i < end; i++) {
      if (buf[i] == '\n') {
        throw new ProtocolException("bare LF in chunk framing");
      }
    }
    if (!inTrailers) {
      for (int i = start; i < end && buf[i] != ';'; i++) {
        if (buf[i] == '\r') {
          break;
        }
        if (Character.digit(buf[i], 16) < 0 && buf[i] != ' ' && buf[i] != '\t') {
          throw new ProtocolException(
              "bad chunk size character 0x" + Integer.toHexString(buf[i] & 0xff));
        }
      }
    }
  }

  private int findCrlf(int from) throws ProtocolException {
    for (int i = from; i + 1 < end; i++) {
      if (buf[i] == '\r') {
        if (buf[i + 1] == '\n') {
          return i;
        }
        throw new ProtocolException("CR without LF in chunk framing");
      }
      if (buf[i] == '\n') {
        throw new ProtocolException("bare LF in chunk framing");
      }
      if (i - from > MAX_LINE) {
        throw new ProtocolException("chunk size line without CRLF in " + MAX_LINE + " bytes");
      }
    }
    return -1;
  }

  private long parseSize(int from, int eol) throws ProtocolException {
    int stop = eol;
    for (int i = from; i < eol; i++) {
      if (buf[i] == ';') {
        stop = i;
        break;
      }
    }
    // Trailing whitespace before an extension is tolerated (RFC 9112 BWS).
    while (stop > from && (buf[stop - 1] == ' ' || buf[stop - 1] == '\t')) {
      stop--;
    }
    if (stop == from) {
      throw new ProtocolException("empty chunk size");
    }
    long size = 0;
    for (int i = from; i < stop; i++) {
      int d = Character.digit(buf[i], 16);
      if (d < 0) {
        throw new ProtocolException(
            "bad chunk size character 0x" + Integer.toHexString(buf[i] & 0xff));
      }
      size = size * 16 + d;
      if (size > MAX_CHUNK) {
        throw new ProtocolException("chunk larger than " + MAX_CHUNK + " bytes");
      }
    }
    return size;
  }
}
