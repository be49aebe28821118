package io.ipush.client;

/** Bytes from the server that break the protocol: a bad chunk, frame, event or message. */
public class ProtocolException extends Exception {
  private static final long serialVersionUID = 1L;

  public ProtocolException(String message) {
    super(message);
  }

  public ProtocolException(String message, Throwable cause) {
    super(message, cause);
  }
}
