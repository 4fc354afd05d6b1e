import Foundation
import HeraldPostgres
import HeraldTestSupport
import Testing

/// No Docker engine runs here, so the compose file and Dockerfile are checked against what the binary accepts.
@Suite struct ComposeTests {
    @Test func composeFileParsesAndMatchesTheBinary() throws {
        let root = try TestEnvironment.projectRoot()
        let python = try TestEnvironment.require("HERALD_TEST_PYTHON")
        let parsed = try ChildProcess.run(python, ["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
                                                   root.appendingPathComponent("docker-compose.yml").path])
        #expect(parsed.status == 0, "\(parsed.output)")
        let compose = try #require(try JSONSerialization.jsonObject(with: Data(parsed.output.utf8)) as? [String: Any])
        let services = try #require(compose["services"] as? [String: [String: Any]])
        #expect(Set(services.keys) == ["postgres", "migrate", "worker", "receiver"])

        let migrate = try #require(services["migrate"])
        let worker = try #require(services["worker"])
        #expect(migrate["build"] as? String == ".")
        #expect(migrate["command"] as? [String] == ["migrate"])
        #expect(worker["command"] as? [String] == ["work"])
        #expect(worker["image"] as? String == migrate["image"] as? String)
        // Scalable with --scale worker=3: no fixed name, no published port.
        #expect(worker["container_name"] == nil && worker["ports"] == nil)
        #expect(((worker["depends_on"] as? [String: Any])?["migrate"] as? [String: String])?["condition"]
            == "service_completed_successfully")

        // Every variable given to herald is one it reads (from `herald work --help`), and the worker starts with them.
        let help = try HeraldProcess.run(["work", "--help"]).output
        var known: Set<String> = ["DATABASE_URL", "HERALD_LOG_LEVEL", "HERALD_LOG_FORMAT", "HERALD_SQL_DIR"]
        for match in help.matches(of: /HERALD_[A-Z_]+/) { known.insert(String(match.output)) }
        let environment = try #require(worker["environment"] as? [String: String])
        for name in environment.keys { #expect(known.contains(name), "\(name) is not a variable herald reads") }
        let fixture = try Fixture()
        var runEnvironment = environment
        runEnvironment["DATABASE_URL"] = fixture.database.url
        let started = try HeraldProcess(["work"], environment: runEnvironment)
        #expect(eventually(timeout: 15) { started.output.contains("starting") }, "\(started.output)")
        #expect(started.isRunning)
        started.terminate()
        // Nothing is in flight, so it stops at once; 30 s only for a machine loaded by the whole suite.
        #expect(started.waitForExit(timeout: 30) && started.terminationStatus == 0, "\(started.output)")

        // The receiver mounts an example that exists; the image puts migrations where `herald migrate` looks.
        let volume = try #require((services["receiver"]?["volumes"] as? [String])?.first)
        let source = String(volume.split(separator: ":")[0]).replacingOccurrences(of: "./", with: "")
        #expect(FileManager.default.fileExists(atPath: root.appendingPathComponent(source).appendingPathComponent("app.py").path))
        let dockerfile = try String(contentsOf: root.appendingPathComponent("Dockerfile"), encoding: .utf8)
        let stages = dockerfile.split(separator: "\n").filter { $0.hasPrefix("FROM ") }
        #expect(stages.count == 2)
        #expect(stages.first?.contains("swift:") == true && stages.first?.contains("AS build") == true)
        #expect(stages.last?.contains("debian:") == true && stages.last?.contains("slim") == true)
        #expect(dockerfile.contains("libpq5") && dockerfile.contains("libcurl4"))
        #expect(dockerfile.contains("COPY sql /usr/share/herald/sql"))
    }
}
