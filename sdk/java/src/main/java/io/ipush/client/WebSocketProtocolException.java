package io.ipush.client;

/** A WebSocket protocol violation, with the close code (RFC 6455 §7.4.1) it calls for. */
public final class WebSocketProtocolException extends ProtocolException {
  private static final long serialVersionUID = 1L;
  private final int closeCode;

  public WebSocketProtocolException(int closeCode, String message) {
    super(message);
    this.closeCode = closeCode;
  }

  /** 1002 protocol error, 1007 invalid data, 1009 too big. */
  public int closeCode() {
    return closeCode;
  }
}
