import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification

/// `lorafuse backends`: every registered backend, whether it can run here, and its devices.
struct BackendsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backends",
        abstract: "List the compute backends, whether each is available here (and why not), and their devices."
    )

    @Flag(name: .long, help: "Print one JSON object per backend.")
    var json = false

    func run() throws {
        for plugin in BackendRegistry.shared.all {
            let availability = plugin.availability()
            if json {
                var object: [String: Any] = ["backend": plugin.name, "summary": plugin.summary]
                switch availability {
                case let .available(devices):
                    object["available"] = true
                    object["devices"] = devices.map { device in
                        ["index": device.index, "name": device.name, "kind": device.kind, "details": device.details] as [String: Any]
                    }
                case let .unavailable(reason):
                    object["available"] = false
                    object["reason"] = reason
                }
                print(try JSONOutput.line(object))
                continue
            }
            switch availability {
            case let .available(devices):
                print("\(plugin.name): available — \(plugin.summary)")
                for device in devices {
                    print("  device \(device.index): \(device.name) [\(device.kind)]")
                    for key in device.details.keys.sorted() { print("    \(key): \(device.details[key]!)") }
                }
            case let .unavailable(reason):
                print("\(plugin.name): unavailable — \(reason)")
            }
        }
    }
}
