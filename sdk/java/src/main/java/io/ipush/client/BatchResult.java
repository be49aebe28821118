package io.ipush.client;

import java.io.IOException;

/**
 * The outcome of one {@link BatchItem}: stored ({@link #ok()}, the server's {@code "ok"}) or an
 * error: an {@link AdminException} with the status and reason {@code /pub} would have answered for
 * that message, or the {@link IOException} of a request that failed as a whole.
 */
public final class BatchResult {
  private static final BatchResult OK = new BatchResult(null);
  private final IOException error;

  private BatchResult(IOException error) {
    this.error = error;
  }

  static BatchResult stored() {
    return OK;
  }

  static BatchResult failed(IOException error) {
    return new BatchResult(error);
  }

  public boolean ok() {
    return error == null;
  }

  /** The error, or null when the message was stored. */
  public IOException error() {
    return error;
  }

  @Override
  public String toString() {
    return error == null ? "ok" : error.toString();
  }
}
