//! The core servers' CoreData service through gRPC: round trips, block-size
//! validation, and durability across a kill and restart.

use bytes::Bytes;
use futures::StreamExt;
use geonfs_proto::core::core_data_client::CoreDataClient;
use geonfs_proto::core::{
    BlockId, DeleteRequest, Durability, FlushRequest, ListRequest, ReadRequest, StatRequest,
    WriteRequest,
};
use geonfs_rpc::RpcChannel;
use geonfs_testkit::cluster::TestCluster;

use crate::support::init_logging;

const BLOCK: u64 = 4 * 1024 * 1024;

fn client(channel: RpcChannel) -> CoreDataClient<RpcChannel> {
    CoreDataClient::new(channel).max_decoding_message_size(BLOCK as usize + 1024 * 1024)
}

fn id(file_id: u64, index: u64) -> Option<BlockId> {
    Some(BlockId { file_id, index })
}

fn write_req(file_id: u64, index: u64, offset: u64, data: Vec<u8>, version: u64) -> WriteRequest {
    WriteRequest {
        block: id(file_id, index),
        offset,
        data: Bytes::from(data),
        version,
        durability: Durability::Durable as i32,
        // Every block these tests write partially is new.
        base_version: Some(0),
        ..Default::default()
    }
}

fn read_req(file_id: u64, index: u64, offset: u64, length: u32) -> ReadRequest {
    ReadRequest {
        block: id(file_id, index),
        offset,
        length,
        with_pending_job: false,
        owner_epoch: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_data_round_trip() {
    init_logging();
    let cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(2)
        .start()
        .await
        .unwrap();
    let mut core = client(cluster.channel("a-core-1", "a-core-2").unwrap());

    let written = core
        .write(write_req(1, 0, 4096, vec![7; 8192], 1))
        .await
        .unwrap()
        .into_inner();
    assert!(written.durable);
    assert_eq!(written.version, 1);
    let mut held = write_req(1, 1, 0, vec![8; 100], 3);
    held.durability = Durability::Held as i32;
    let held = core.write(held).await.unwrap().into_inner();
    assert!(!held.durable);
    assert_eq!(held.incarnation, written.incarnation);

    let read = core
        .read(read_req(1, 0, 0, 16384))
        .await
        .unwrap()
        .into_inner();
    assert!(read.found);
    assert_eq!(read.version, 1);
    assert_eq!(&read.data[..4096], &[0; 4096][..]);
    assert_eq!(&read.data[4096..12288], &[7; 8192][..]);
    assert_eq!(&read.data[12288..], &[0; 4096][..]);
    let absent = core.read(read_req(9, 9, 0, 10)).await.unwrap().into_inner();
    assert!(!absent.found);
    // A whole block in one message.
    core.write(write_req(2, 0, 0, vec![3; BLOCK as usize], 1))
        .await
        .unwrap();
    let whole = core
        .read(read_req(2, 0, 0, BLOCK as u32))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(whole.data.len() as u64, BLOCK);
    assert!(whole.data.iter().all(|&b| b == 3));

    let stat = core.stat(StatRequest {}).await.unwrap().into_inner();
    assert_eq!(stat.blocks, 3);
    assert_eq!(stat.capacity_bytes, 1024 * 1024 * 1024);
    // Block 1/0 stores its two written 4 KiB chunks (the first 4 KiB were
    // never written: sparse), 1/1 one chunk of 100 bytes.
    assert_eq!(stat.used_bytes, 8192 + 100 + BLOCK);

    let list = core
        .list(ListRequest {
            start_after: None,
            limit: 2,
            deleted: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.more);
    let listed: Vec<_> = list.blocks.iter().map(|b| b.block.unwrap()).collect();
    assert_eq!(listed, [id(1, 0).unwrap(), id(1, 1).unwrap()]);
    assert!(list.blocks[0].durable);
    assert!(!list.blocks[1].durable);
    assert_eq!(list.blocks[1].version, 3);
    core.flush(FlushRequest { blocks: vec![] }).await.unwrap();
    let list = core
        .list(ListRequest {
            start_after: id(1, 0),
            limit: 10,
            deleted: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!list.more);
    assert_eq!(list.blocks.len(), 2);
    assert!(list.blocks.iter().all(|b| b.durable));

    // Stale writes and past-the-block writes are refused with clear codes.
    let err = core
        .write(write_req(1, 1, 0, vec![1], 2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("stored 3, offered 2"), "{err}");
    let err = core
        .write(write_req(1, 0, BLOCK - 10, vec![1; 11], 2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("block size"), "{err}");
    let err = core.read(read_req(1, 0, BLOCK, 1)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    let deleted = core
        .delete(DeleteRequest {
            block: id(1, 1),
            up_to_version: 2,
            owner_epoch: 0,
            trim: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!deleted.deleted, "a newer block is kept");
    let deleted = core
        .delete(DeleteRequest {
            block: id(1, 1),
            up_to_version: 3,
            owner_epoch: 0,
            trim: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.deleted);
    assert!(
        !core
            .read(read_req(1, 1, 0, 1))
            .await
            .unwrap()
            .into_inner()
            .found
    );
    let stat = core.stat(StatRequest {}).await.unwrap().into_inner();
    assert_eq!(stat.blocks, 2);
    assert_eq!(stat.used_bytes, 8192 + BLOCK);

    // The node's registry carries the core metrics.
    let names: Vec<String> = cluster
        .node("a-core-2")
        .unwrap()
        .registry()
        .gather()
        .iter()
        .map(|family| family.name().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n == "geonfs_core_writes_total"),
        "{names:?}"
    );
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_survive_a_kill() {
    init_logging();
    let mut cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(2)
        .start()
        .await
        .unwrap();
    let mut core = client(cluster.channel("a-core-1", "a-core-2").unwrap());
    let mut incarnation = 0;
    for i in 0..20u64 {
        let reply = core
            .write(write_req(5, i, i * 1000, vec![i as u8 + 1; 5000], i + 1))
            .await
            .unwrap()
            .into_inner();
        incarnation = reply.incarnation;
    }
    cluster.kill_node("a-core-2").await.unwrap();
    cluster.restart_node("a-core-2").await.unwrap();
    let mut core = client(cluster.channel("a-core-1", "a-core-2").unwrap());
    for i in 0..20u64 {
        let read = core
            .read(read_req(5, i, i * 1000, 5000))
            .await
            .unwrap()
            .into_inner();
        assert!(read.found, "block {i} lost");
        assert_eq!(read.version, i + 1);
        assert!(read.data.iter().all(|&b| b == i as u8 + 1), "block {i}");
        assert_ne!(
            read.incarnation, incarnation,
            "a restart changes the incarnation"
        );
    }
    let stat = core.stat(StatRequest {}).await.unwrap().into_inner();
    assert_eq!(stat.blocks, 20);
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_stream_answers_every_put_in_order() {
    use geonfs_proto::replication::block_replication_client::BlockReplicationClient;
    use geonfs_proto::replication::ReplicaPut;

    init_logging();
    let cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(2)
        .without_replication()
        .start()
        .await
        .unwrap();
    let mut replication =
        BlockReplicationClient::new(cluster.channel("a-core-1", "a-core-2").unwrap());
    let put = |index: u64, version: u64, fill: u8| ReplicaPut {
        block: Some(geonfs_proto::core::BlockId { file_id: 77, index }),
        version,
        data: Bytes::from(vec![fill; 70_000]),
        origin_site: "b".into(),
        ..Default::default()
    };
    // Ten puts, one invalid (version 0) in the middle, one stale at the end.
    let mut puts: Vec<ReplicaPut> = (0..10).map(|i| put(i, 5, i as u8 + 1)).collect();
    puts[4].version = 0;
    puts.push(put(0, 3, 0xee));
    let replies: Vec<_> = replication
        .replicate(futures::stream::iter(puts))
        .await
        .unwrap()
        .into_inner()
        .collect::<Vec<_>>()
        .await;
    assert_eq!(replies.len(), 11, "one reply per put: {replies:?}");
    for (i, reply) in replies.iter().enumerate() {
        let reply = reply.as_ref().unwrap();
        let index = reply.block.unwrap().index;
        match i {
            4 => {
                assert_eq!(index, 4);
                assert_eq!(
                    reply.error_code,
                    tonic::Code::InvalidArgument as i32,
                    "{reply:?}"
                );
                assert!(reply.error.contains("versions start at 1"), "{reply:?}");
            }
            10 => {
                assert_eq!(index, 0);
                assert!(
                    reply.skipped_stale && reply.stored_version == 5,
                    "{reply:?}"
                );
            }
            _ => {
                assert_eq!(index, i as u64, "replies come in order");
                assert!(reply.applied && reply.error.is_empty(), "{reply:?}");
            }
        }
    }
    // What the stream applied is on disk; the invalid put left nothing.
    let mut core = client(cluster.channel("a-core-1", "a-core-2").unwrap());
    for index in 0..10u64 {
        let read = core
            .read(read_req(77, index, 0, 10))
            .await
            .unwrap()
            .into_inner();
        if index == 4 {
            assert!(!read.found);
        } else {
            assert_eq!((read.version, read.data[0]), (5, index as u8 + 1));
        }
    }
    cluster.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_report_the_pending_job_only_when_asked() {
    init_logging();
    let cluster = TestCluster::builder()
        .sites(1)
        .cores_per_site(2)
        .without_replication()
        .start()
        .await
        .unwrap();
    let mut core = client(cluster.channel("a-core-1", "a-core-2").unwrap());
    let mut write = write_req(9, 0, 0, vec![1; 100], 4);
    write.replicate_to = vec!["b-core-1".into()];
    write.primary = true;
    write.peer = "a-core-1".into();
    core.write(write).await.unwrap();
    let plain = core.read(read_req(9, 0, 0, 0)).await.unwrap().into_inner();
    assert!(plain.found);
    assert_eq!(plain.pending_job_version, 0, "not asked: no job lookup");
    let mut asked = read_req(9, 0, 0, 0);
    asked.with_pending_job = true;
    let asked = core.read(asked).await.unwrap().into_inner();
    assert_eq!(asked.pending_job_version, 4);
    cluster.shutdown().await.unwrap();
}
