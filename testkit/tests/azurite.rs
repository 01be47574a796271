//! The Blob client against a real Azurite (`azurite-blob` from `AZURITE_BIN`, installed by
//! `make azurite`). Without AZURITE_BIN the tests that need it are reported as ignored (see
//! build.rs), unless CI is set.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use telemux_testkit::azurite::{Azurite, AzuriteError, BlobClient, DEV_ACCOUNT, DEV_ACCOUNT_KEY};

fn azurite_bin() -> PathBuf {
    match std::env::var_os("AZURITE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!("AZURITE_BIN is not set (run `make azurite` and export the path it prints)"),
    }
}

#[tokio::test]
#[cfg_attr(no_azurite, ignore = "needs Azurite: AZURITE_BIN (make azurite)")]
async fn containers_and_blobs_round_trip() {
    let bin = azurite_bin();
    let azurite = Azurite::start(&bin).await.unwrap();
    let client = azurite.client();

    for c in ["traces", "logs", "metrics"] {
        client.create_container(c).await.unwrap();
    }
    // Creating an existing container is fine.
    client.create_container("traces").await.unwrap();
    assert!(client.list_blobs("traces").await.unwrap().is_empty());

    let body = br#"{"resourceSpans":[]}"#.to_vec();
    let names = [
        "2025/01/24/traces_10_30_45.json_4821",
        "plain.json",
        "with space & amp+plus.json",
        "z/\u{e9}t\u{e9}.json",
    ];
    for n in names {
        client
            .put_blob("traces", n, body.clone(), "application/json")
            .await
            .unwrap();
    }
    // Replaces the blob.
    client
        .put_blob("traces", "plain.json", b"second".to_vec(), "text/plain")
        .await
        .unwrap();

    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(client.list_blobs("traces").await.unwrap(), expected);
    assert_eq!(client.get_blob("traces", names[0]).await.unwrap(), body);
    assert_eq!(client.get_blob("traces", names[2]).await.unwrap(), body);
    assert_eq!(client.get_blob("traces", names[3]).await.unwrap(), body);
    assert_eq!(
        client.get_blob("traces", "plain.json").await.unwrap(),
        b"second"
    );
    assert!(client.list_blobs("logs").await.unwrap().is_empty());

    // An empty blob.
    client
        .put_blob("logs", "empty", Vec::new(), "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(client.get_blob("logs", "empty").await.unwrap(), b"");

    // Paging with markers: 7 blobs, 2 per page.
    for i in 0..7 {
        client
            .put_blob(
                "metrics",
                &format!("m{i}"),
                vec![b'x'; i],
                "application/octet-stream",
            )
            .await
            .unwrap();
    }
    let paged = client.clone().with_page_size(2);
    assert_eq!(
        paged.list_blobs("metrics").await.unwrap(),
        (0..7).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );

    // Errors carry the status and the service's error code.
    let e = client.get_blob("traces", "missing").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::NOT_FOUND), "{e}");
    assert_eq!(e.code(), Some("BlobNotFound"), "{e}");
    let e = client.list_blobs("nosuchcontainer").await.unwrap_err();
    assert_eq!(e.code(), Some("ContainerNotFound"), "{e}");
    assert!(e.to_string().contains("404"), "{e}");
    let e = client.create_container("Bad_Name").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
}

#[tokio::test]
#[cfg_attr(no_azurite, ignore = "needs Azurite: AZURITE_BIN (make azurite)")]
async fn signatures_are_checked() {
    let bin = azurite_bin();
    let azurite = Azurite::start(&bin).await.unwrap();
    azurite.client().create_container("sigs").await.unwrap();

    // Same account, another key: the signature no longer matches.
    let wrong = BlobClient::new(
        &azurite.blob_endpoint(),
        DEV_ACCOUNT,
        "AAAAvdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    )
    .unwrap();
    let e = wrong.list_blobs("sigs").await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::FORBIDDEN), "{e}");
    assert_eq!(e.code(), Some("AuthorizationFailure"), "{e}");

    // The right key, given explicitly and through the connection string.
    let right = BlobClient::new(&azurite.blob_endpoint(), DEV_ACCOUNT, DEV_ACCOUNT_KEY).unwrap();
    assert!(right.list_blobs("sigs").await.unwrap().is_empty());
    let from_cs = BlobClient::from_connection_string(&azurite.connection_string()).unwrap();
    from_cs
        .put_blob("sigs", "b", b"hi".to_vec(), "text/plain")
        .await
        .unwrap();
    assert_eq!(right.get_blob("sigs", "b").await.unwrap(), b"hi");
}

#[tokio::test]
#[cfg_attr(no_azurite, ignore = "needs Azurite: AZURITE_BIN (make azurite)")]
async fn wait_for_blobs_and_shutdown() {
    let bin = azurite_bin();
    let azurite = Azurite::start(&bin).await.unwrap();
    let endpoint = azurite.blob_endpoint();
    assert_eq!(
        azurite.connection_string(),
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_ACCOUNT_KEY};BlobEndpoint={endpoint};"
        )
    );
    let client = azurite.client();

    // A missing container counts as empty until it appears.
    let writer = client.clone();
    let put = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        writer.create_container("late").await?;
        writer
            .put_blob("late", "one", b"1".to_vec(), "text/plain")
            .await
    });
    let found = client
        .wait_for_blobs("late", 1, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(found, ["one"]);
    put.await.unwrap().unwrap();
    let e = client
        .wait_for_blobs("late", 2, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("found [\"one\"]"), "{e}");

    // Dropping Azurite kills it: the port no longer answers.
    let log = azurite.log_path().to_path_buf();
    assert!(log.exists());
    azurite.stop();
    assert!(!log.exists(), "the log of a passing run is removed");
    let e = client.list_blobs("late").await.unwrap_err();
    assert!(e.status().is_none(), "{e}");
}

#[tokio::test]
async fn start_failures_name_the_binary_or_the_log() {
    // Needs no Azurite: a missing binary, and one that exits at once.
    let e = Azurite::start(Path::new("/nonexistent/azurite-blob"))
        .await
        .unwrap_err();
    assert!(matches!(e, AzuriteError::Spawn { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/azurite-blob"), "{e}");

    let dir = std::env::temp_dir().join(format!("telemux-azurite-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("azurite-blob");
    std::fs::write(&fake, "#!/bin/sh\necho \"fake azurite: $*\" >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let e = Azurite::start(&fake).await.unwrap_err();
    let AzuriteError::Exited {
        status,
        log,
        log_tail,
    } = &e
    else {
        panic!("unexpected error: {e}");
    };
    assert_eq!(status.code(), Some(3));
    assert!(e.to_string().contains(&log.display().to_string()), "{e}");
    assert!(
        log_tail.contains("fake azurite: --blobHost 127.0.0.1 --blobPort"),
        "{e}"
    );
    // The log is kept for whoever reads the error.
    assert!(log.exists());
    std::fs::remove_file(log).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
