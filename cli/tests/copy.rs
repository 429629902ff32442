//! `copy` and `rcopy`, with scp, rsync and SFTP.

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

#[test]
fn copy_and_rcopy_with_sftp_and_create_dirs() {
    let c = Cluster::start(&["a", "b"]);
    let all = c.nodeset(&[0, 1]);
    let tree = c.home.path().join("site");
    std::fs::create_dir_all(tree.join("css")).unwrap();
    std::fs::write(tree.join("index.html"), "<p>hi</p>\n").unwrap();
    std::fs::write(tree.join("css/main.css"), "p {}\n").unwrap();
    let tree = format!("{}/", tree.to_str().unwrap());
    // Twice: the same tree (the contents of site/ land in www/).
    for _ in 0..2 {
        let out = c.run(&["copy", "-w", &all, "--sftp", "--create-dirs", "-r", &tree, "srv/www/"]);
        assert_eq!(out.code(), 0, "{out:?}");
        for i in 0..2 {
            let www = c.dir(i).join("srv/www");
            assert_eq!(std::fs::read_to_string(www.join("index.html")).unwrap(), "<p>hi</p>\n");
            assert_eq!(std::fs::read_to_string(www.join("css/main.css")).unwrap(), "p {}\n");
            let mut names: Vec<_> = std::fs::read_dir(&www)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            assert_eq!(names, ["css", "index.html"], "{}", www.display());
        }
    }
    // Without --create-dirs a missing directory is a failure naming it.
    let out = c.run(&["copy", "-w", &all, "--sftp", "-r", &tree, "no/such/dir/"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr().contains("no/such/dir"), "{out:?}");
    let local = tempfile::tempdir().unwrap();
    let out = c.run(&["rcopy", "-w", &all, "--sftp", "id.txt", local.path().to_str().unwrap()]);
    assert_eq!(out.code(), 0, "{out:?}");
    for (i, id) in ["a", "b"].iter().enumerate() {
        let copy: PathBuf = local.path().join(format!("id.txt.{}", c.host(i)));
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), format!("{id}\n"));
    }
}
