//! `copy` and `rcopy`, with scp and rsync.

mod common;

use std::path::PathBuf;

use common::Cluster;

#[test]
fn copy_and_rcopy_with_scp_and_rsync() {
    let c = Cluster::start(&["a", "b"]);
    let all = c.nodeset(&[0, 1]);
    let src = c.home.path().join("payload.txt");
    std::fs::write(&src, "payload\n").unwrap();
    let src = src.to_str().unwrap();
    for (flag, name) in [(None, "scp.txt"), (Some("--rsync"), "rsync.txt")] {
        let mut args = vec!["copy", "-w", &all];
        args.extend(flag);
        args.extend([src, name]);
        let out = c.run(&args);
        assert_eq!(out.code(), 0, "{out:?}");
        for i in 0..2 {
            assert_eq!(std::fs::read_to_string(c.dir(i).join(name)).unwrap(), "payload\n");
        }
    }
    for flag in [None, Some("--rsync")] {
        let local = tempfile::tempdir().unwrap();
        let mut args = vec!["rcopy", "-w", &all];
        args.extend(flag);
        args.extend(["id.txt", local.path().to_str().unwrap()]);
        let out = c.run(&args);
        assert_eq!(out.code(), 0, "{out:?}");
        for (i, id) in ["a", "b"].iter().enumerate() {
            let copy: PathBuf = local.path().join(format!("id.txt.{}", c.host(i)));
            assert_eq!(std::fs::read_to_string(&copy).unwrap(), format!("{id}\n"), "{flag:?}");
        }
    }
}
