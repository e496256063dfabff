//! Length-prefixed frames: a 4-byte big-endian length, then that many bytes.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The default largest frame: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Reading or writing a frame failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The stream ended before (`Eof`) or inside a frame.
    #[error("stream ended{}", if *.inside_frame { " inside a frame" } else { "" })]
    Eof {
        /// Whether part of a frame had been read.
        inside_frame: bool,
    },
    /// The length prefix is above the maximum; nothing was allocated.
    #[error("frame of {length} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced length.
        length: u64,
        /// The maximum.
        max: usize,
    },
    /// An I/O error.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads one frame, checking its length against `max` before allocating.
///
/// # Errors
///
/// [`FrameError::Eof`] at the end of the stream, [`FrameError::TooLarge`], or an I/O error.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut filled = 0;
    while filled < 4 {
        let n = reader.read(&mut prefix[filled..]).await?;
        if n == 0 {
            return Err(FrameError::Eof {
                inside_frame: filled > 0,
            });
        }
        filled += n;
    }
    let length = u32::from_be_bytes(prefix) as usize;
    if length > max {
        return Err(FrameError::TooLarge {
            length: length as u64,
            max,
        });
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => FrameError::Eof { inside_frame: true },
            _ => FrameError::Io(e),
        })?;
    Ok(body)
}

/// Writes one frame and flushes.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when `body` exceeds `max` (nothing is written), or an I/O error.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    let frame = encode_frame(body, max)?;
    writer.write_all(&frame).await?;
    writer.flush().await?;
    Ok(())
}

/// The bytes of one whole frame (length prefix and body), ready to be written in one go.
///
/// # Errors
///
/// [`FrameError::TooLarge`] when `body` exceeds `max` or 4 GiB.
pub fn encode_frame(body: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    let length = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= max)
        .ok_or(FrameError::TooLarge {
            length: body.len() as u64,
            max,
        })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(body);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_limits() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, b"{\"a\":1}", 100).await.unwrap();
        write_frame(&mut buffer, b"", 100).await.unwrap();
        assert!(matches!(
            write_frame(&mut buffer, &[0; 101], 100).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut reader = &buffer[..];
        assert_eq!(read_frame(&mut reader, 100).await.unwrap(), b"{\"a\":1}");
        assert_eq!(read_frame(&mut reader, 100).await.unwrap(), b"");
        assert!(matches!(
            read_frame(&mut reader, 100).await,
            Err(FrameError::Eof {
                inside_frame: false
            })
        ));
    }

    #[tokio::test]
    async fn a_huge_length_prefix_is_refused_before_allocating() {
        let bytes = [0xFF, 0xFF, 0xFF, 0xFF, b'x'];
        let mut reader = &bytes[..];
        match read_frame(&mut reader, DEFAULT_MAX_FRAME).await {
            Err(FrameError::TooLarge { length, .. }) => assert_eq!(length, u32::MAX as u64),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn truncated_frames_are_eof_inside_a_frame() {
        let bytes = [0, 0, 0, 10, b'x'];
        let mut reader = &bytes[..];
        assert!(matches!(
            read_frame(&mut reader, 100).await,
            Err(FrameError::Eof { inside_frame: true })
        ));
        let mut short = &[0u8, 0][..];
        assert!(matches!(
            read_frame(&mut short, 100).await,
            Err(FrameError::Eof { inside_frame: true })
        ));
    }
}
