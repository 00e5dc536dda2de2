//! A thin NFSv3 client for benchmarks: `nfs3_client` over TCP from a
//! chosen source address (so the client sits in a chosen site), AUTH_UNIX
//! as root, and the calls the benchmarks and the thrasher make (MOUNT,
//! CREATE, WRITE, READ, COMMIT, GETATTR, SETATTR of the size) with NFS
//! error statuses turned into `anyhow` errors.
//!
//! One [`NfsConn`] has one call in flight; a benchmark that wants N in
//! flight opens N connections.

use std::net::{IpAddr, SocketAddr};

use anyhow::{bail, Context};
use nfs3_client::io::{AsyncRead, AsyncWrite};
use nfs3_client::nfs3_types::mount::dirpath;
use nfs3_client::nfs3_types::nfs3::{
    createhow3, diropargs3, filename3, sattr3, COMMIT3args, CREATE3args, GETATTR3args, Nfs3Option,
    Nfs3Result, READ3args, SETATTR3args, WRITE3args,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::{MountClient, Nfs3Client};
use tokio::net::{TcpSocket, TcpStream};

pub use nfs3_client::nfs3_types::nfs3::{nfs_fh3, stable_how};

/// The transport of every connection: a TCP stream whose end is an error.
/// (`nfs3_client` 0.9's `TokioIo` returns 0 bytes at the end of the stream,
/// and its `async_read_exact` then spins forever: a call on a connection
/// the server closed, e.g. a killed access server's, never returned.)
pub struct Io(TcpStream);

impl AsyncRead for Io {
    async fn async_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = tokio::io::AsyncReadExt::read(&mut self.0, buf).await?;
        if read == 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        Ok(read)
    }
}

impl AsyncWrite for Io {
    async fn async_write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        tokio::io::AsyncWriteExt::write(&mut self.0, buf).await
    }
}

/// A TCP connection from `from` (port chosen by the system) to `to`,
/// without Nagle's delay.
pub async fn connect(from: IpAddr, to: SocketAddr) -> anyhow::Result<Io> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .context("cannot create a TCP socket")?;
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("cannot bind a client socket to {from}"))?;
    let stream = socket
        .connect(to)
        .await
        .with_context(|| format!("cannot connect from {from} to {to}"))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    Ok(Io(stream))
}

/// AUTH_UNIX credentials of root.
fn root() -> opaque_auth<'static> {
    opaque_auth::auth_unix(&auth_unix {
        stamp: 1,
        machinename: Opaque::borrowed(b"geonfs-bench"),
        uid: 0,
        gid: 0,
        gids: vec![],
    })
}

/// Mounts `export` of the server at `to` from `from`; the handle of the
/// export's root directory.
pub async fn mount(from: IpAddr, to: SocketAddr, export: &str) -> anyhow::Result<nfs_fh3> {
    let mut client =
        MountClient::new_with_auth(connect(from, to).await?, root(), opaque_auth::default());
    let ok = client
        .mnt(dirpath(Opaque::owned(export.as_bytes().to_vec())))
        .await
        .with_context(|| format!("MOUNT {export} at {to}"))?;
    Ok(nfs_fh3 {
        data: Opaque::owned(ok.fhandle.0.to_vec()),
    })
}

/// One NFSv3 connection (one call in flight at a time).
pub struct NfsConn {
    client: Nfs3Client<Io>,
    server: SocketAddr,
}

impl NfsConn {
    /// Connects from `from` to the NFS server at `to`.
    pub async fn connect(from: IpAddr, to: SocketAddr) -> anyhow::Result<Self> {
        Ok(NfsConn {
            client: Nfs3Client::new_with_auth(
                connect(from, to).await?,
                root(),
                opaque_auth::default(),
            ),
            server: to,
        })
    }

    /// CREATE `name` in `dir` (UNCHECKED: an existing file is reused); its
    /// handle.
    pub async fn create(&mut self, dir: &nfs_fh3, name: &str) -> anyhow::Result<nfs_fh3> {
        let res = self
            .client
            .create(&CREATE3args {
                where_: diropargs3 {
                    dir: dir.clone(),
                    name: filename3(Opaque::owned(name.as_bytes().to_vec())),
                },
                how: createhow3::UNCHECKED(sattr3::default()),
            })
            .await
            .with_context(|| format!("CREATE {name} at {}", self.server))?;
        match res {
            Nfs3Result::Ok(ok) => match ok.obj {
                Nfs3Option::Some(fh) => Ok(fh),
                Nfs3Option::None => bail!("CREATE {name} at {}: no handle", self.server),
            },
            Nfs3Result::Err((status, _)) => bail!("CREATE {name} at {}: {status}", self.server),
        }
    }

    /// WRITE all of `data` at `offset` with stability `stable`; the
    /// server's write verifier.
    pub async fn write(
        &mut self,
        fh: &nfs_fh3,
        offset: u64,
        data: &[u8],
        stable: stable_how,
    ) -> anyhow::Result<[u8; 8]> {
        let count = u32::try_from(data.len()).context("WRITE of more than 4 GiB")?;
        let res = self
            .client
            .write(&WRITE3args {
                file: fh.clone(),
                offset,
                count,
                stable,
                data: Opaque::borrowed(data),
            })
            .await
            .with_context(|| format!("WRITE at {}", self.server))?;
        match res {
            Nfs3Result::Ok(ok) if ok.count == count => Ok(ok.verf.0),
            Nfs3Result::Ok(ok) => bail!(
                "WRITE at {}: {} of {count} bytes written",
                self.server,
                ok.count
            ),
            Nfs3Result::Err((status, _)) => bail!("WRITE at {}: {status}", self.server),
        }
    }

    /// READ of `count` bytes at `offset` (fewer at the end of the file).
    pub async fn read(&mut self, fh: &nfs_fh3, offset: u64, count: u32) -> anyhow::Result<Vec<u8>> {
        let res = self
            .client
            .read(&READ3args {
                file: fh.clone(),
                offset,
                count,
            })
            .await
            .with_context(|| format!("READ at {}", self.server))?;
        match res {
            Nfs3Result::Ok(ok) => Ok(ok.data.as_ref().to_vec()),
            Nfs3Result::Err((status, _)) => bail!("READ at {}: {status}", self.server),
        }
    }

    /// COMMIT of the whole file; the server's write verifier (a writer
    /// whose unstable writes carried another one must send them again).
    pub async fn commit(&mut self, fh: &nfs_fh3) -> anyhow::Result<[u8; 8]> {
        let res = self
            .client
            .commit(&COMMIT3args {
                file: fh.clone(),
                offset: 0,
                count: 0,
            })
            .await
            .with_context(|| format!("COMMIT at {}", self.server))?;
        match res {
            Nfs3Result::Ok(ok) => Ok(ok.verf.0),
            Nfs3Result::Err((status, _)) => bail!("COMMIT at {}: {status}", self.server),
        }
    }

    /// GETATTR: the file's size.
    pub async fn size(&mut self, fh: &nfs_fh3) -> anyhow::Result<u64> {
        let res = self
            .client
            .getattr(&GETATTR3args { object: fh.clone() })
            .await
            .with_context(|| format!("GETATTR at {}", self.server))?;
        match res {
            Nfs3Result::Ok(ok) => Ok(ok.obj_attributes.size),
            Nfs3Result::Err((status, _)) => bail!("GETATTR at {}: {status}", self.server),
        }
    }

    /// SETATTR of the size only (truncate or extend with zeros).
    pub async fn set_size(&mut self, fh: &nfs_fh3, size: u64) -> anyhow::Result<()> {
        let res = self
            .client
            .setattr(&SETATTR3args {
                object: fh.clone(),
                new_attributes: sattr3 {
                    size: Nfs3Option::Some(size),
                    ..sattr3::default()
                },
                guard: Nfs3Option::None,
            })
            .await
            .with_context(|| format!("SETATTR at {}", self.server))?;
        match res {
            Nfs3Result::Ok(_) => Ok(()),
            Nfs3Result::Err((status, _)) => bail!("SETATTR at {}: {status}", self.server),
        }
    }
}
