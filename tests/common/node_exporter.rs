//! A real node_exporter serving bpfsnap's textfiles, for tests that check
//! it reads every file bpfsnap writes without a scrape error, or with the
//! flags a test gives (its default collectors behind a web config).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, PATIENCE};

/// A node_exporter with only the textfile collector, on loopback; killed on drop.
pub struct NodeExporter {
    child: Child,
    pub port: u16,
}

impl NodeExporter {
    pub fn start(textfile_dir: &Path) -> NodeExporter {
        NodeExporter::with_args(&[
            "--collector.disable-defaults".to_string(),
            "--collector.textfile".to_string(),
            format!("--collector.textfile.directory={}", textfile_dir.display()),
        ])
    }

    /// node_exporter with `args` on a free loopback port, once it listens.
    pub fn with_args(args: &[String]) -> NodeExporter {
        let port = free_port();
        let child = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus-node-exporter (make test-deps installs it)");
        let exporter = NodeExporter { child, port };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "node_exporter did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        exporter
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// GET /metrics; the body.
    pub fn scrape(&self) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.port)).expect("connect node_exporter");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_string()
    }
}

impl Drop for NodeExporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
