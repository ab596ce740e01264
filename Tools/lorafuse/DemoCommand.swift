import ArgumentParser
import Foundation
import LoRAFuse
import LoRAFuseModels
import LoRAFuseFusion
import LoRAFuseRetrieval
import LoRAFusePipeline
import LoRAFuseVerification
import LoRAFuseToyWorld

/// Where the bundled toy world is: `--world`, else `Examples/toyworld` under the current
/// folder (a clone's root), else beside this source file's checkout.
struct WorldLocation: ParsableArguments {
    @Option(name: .long, help: "The toy world folder (default: Examples/toyworld of this checkout).")
    var world: String?

    func load() throws -> ToyWorld {
        if let world { return try ToyWorld.load(folder: world) }
        let candidates = [FileManager.default.currentDirectoryPath,
                          URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path]
        for root in candidates {
            let folder = URL(fileURLWithPath: root).appendingPathComponent("Examples/toyworld").path
            if FileManager.default.fileExists(atPath: folder + "/world.json") { return try ToyWorld.load(folder: folder) }
        }
        throw ValidationError("no toy world found: run from the repository root or give --world FOLDER (Examples/toyworld)")
    }
}

/// One way of applying a content LoRA and a style LoRA: a column of the demo grid, a row of
/// the evaluation table.
enum FusionColumn: String, CaseIterable, ExpressibleByArgument {
    case content, style, merge, `switch`, composite, klora
    /// K-LoRA with the supplement's periodic S*(p).
    case kloraPeriodic = "klora-periodic"
    case estlora, autolora

    /// The title above the column in the demo grid.
    var title: String {
        switch self {
        case .klora: "K-LoRA"
        case .kloraPeriodic: "K-LoRA S*"
        case .estlora: "EST-LoRA"
        case .autolora: "AutoLoRA"
        default: rawValue
        }
    }

    /// The `lorafuse generate` LoRA options this column stands for.
    func arguments(content: ToyWorld.Concept, style: ToyWorld.Concept, merger: String?) throws -> [String] {
        switch self {
        case .content: return ["--lora", content.lora]
        case .style: return ["--lora", style.lora]
        case .merge, .switch, .composite, .klora, .estlora: return ["--fusion", rawValue, "--content", content.lora, "--style", style.lora]
        case .kloraPeriodic:
            return ["--fusion", "klora", "--klora-schedule", "periodic", "--content", content.lora, "--style", style.lora]
        case .autolora:
            guard let merger else { throw ValidationError("autolora: this world has no AutoLoRA merger (`merger` in world.json)") }
            return ["--fusion", "autolora", "--fusion-weights", merger, "--lora", content.lora, "--lora", style.lora]
        }
    }
}

/// The toy world's pipeline loaded once, generating images for (content, style, column, seed).
struct WorldGenerator {
    let world: ToyWorld
    let backend: any Backend
    let flux: FluxModel
    let decoder: VAEDecoder
    let encoders: FluxTextEncoders
    let schedulerConfig: FlowMatchSchedulerConfig

    init(world: ToyWorld, backend: any Backend) throws {
        self.world = world
        self.backend = backend
        let pipeline = URL(fileURLWithPath: world.pipeline)
        flux = try FluxModel.load(path: pipeline.appendingPathComponent("transformer").path)
        decoder = try VAEDecoder.load(path: pipeline.appendingPathComponent("vae").path)
        encoders = try FluxTextEncoders.load(pipeline: world.pipeline)
        let scheduler = pipeline.appendingPathComponent("scheduler/scheduler_config.json")
        schedulerConfig = FileManager.default.fileExists(atPath: scheduler.path) ? try FlowMatchSchedulerConfig(file: scheduler) : FlowMatchSchedulerConfig()
    }

    /// H × W × 3 bytes for the fusion prompt of the pair, with the column's LoRAs, one image per seed.
    /// The LoRAs are loaded (and K-LoRA planned) once for all the seeds.
    func images(content: ToyWorld.Concept, style: ToyWorld.Concept, column: FusionColumn, seeds: [UInt64]) throws -> [[UInt8]] {
        try images(arguments: try column.arguments(content: content, style: style, merger: world.merger),
                   prompt: world.prompt(content: content, style: style), seeds: seeds)
    }

    /// H × W × 3 bytes for `prompt` with the LoRAs `arguments` names (`generate`'s LoRA options), one image per seed.
    func images(arguments: [String], prompt: String, seeds: [UInt64]) throws -> [[UInt8]] {
        let plan = try LoRAOptions.parse(arguments).plan(flux, backend: backend)
        return try seeds.map { try image(prompt: prompt, plan: plan, seed: $0) }
    }

    private func image(prompt: String, plan: FusionPlan, seed: UInt64) throws -> [UInt8] {
        var settings = FluxTextToImage.Settings(prompt: prompt, width: world.width, height: world.height, steps: world.steps)
        settings.seed = seed
        settings.maxSequenceLength = world.maxSequenceLength
        settings.schedulerConfig = schedulerConfig
        return try FluxTextToImage(settings: settings, backend: backend).run(encoders: { encoders }, model: flux, plan: plan,
                                                                             vae: { decoder }).pixels
    }
}

/// `lorafuse demo`: the README's main command.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Draw the toy world's fusion grid: content+style pairs × (content only, style only, merge, switch, composite, K-LoRA, EST-LoRA, AutoLoRA).",
        discussion: """
        Uses the bundled toy world (Examples/toyworld: a FLUX pipeline trained on 32×32 shapes, content LoRAs that teach \
        new shapes and style LoRAs that teach new textures and palettes). Every image is generated from the pair's prompt \
        ("a zorbo in lumeq style") with the same seed along a row; only the LoRAs and the fusion method change.
        """
    )

    @OptionGroup var location: WorldLocation

    @Option(name: .long, help: "Where to write the grid (.png).")
    var output = "lorafuse-demo.png"

    @Option(name: .long, parsing: .unconditional, help: "Rows: the first N of the world's demo pairs.")
    var pairs: Int?

    @Option(name: .long, parsing: .unconditional, help: "Seed of the first row (row i uses seed + i).")
    var seed: UInt64 = 0

    @Option(name: .long, parsing: .unconditional, help: "Pixels per image pixel in the grid.")
    var scale = 4

    @Option(name: .long, parsing: .upToNextOption, help: "Columns, in order (default: all the world supports).")
    var columns: [FusionColumn] = []

    @Flag(name: .long, inversion: .prefixedNo, help: "Titles above the columns and left of the rows.")
    var labels = true

    @OptionGroup var backendOptions: BackendOptions

    func validate() throws {
        if let pairs, pairs < 1 { throw ValidationError("--pairs must be at least 1") }
        guard (1...16).contains(scale) else { throw ValidationError("--scale must be in 1...16") }
        let folder = URL(fileURLWithPath: output).deletingLastPathComponent().path
        guard FileManager.default.isWritableFile(atPath: folder.isEmpty ? "." : folder) else {
            throw ValidationError("\(output): cannot write there (\(folder) is not a writable folder)")
        }
    }

    func run() throws {
        let world = try location.load()
        let backend = try backendOptions.makeBackend()
        let generator = try WorldGenerator(world: world, backend: backend)
        let columns = self.columns.isEmpty ? FusionColumn.allCases.filter { $0 != .kloraPeriodic && ($0 != .autolora || world.merger != nil) } : self.columns
        let pairs = Array(world.demoPairs.prefix(self.pairs ?? world.demoPairs.count))
        let start = DispatchTime.now().uptimeNanoseconds
        var rows: [[[UInt8]]] = []
        for (index, pair) in pairs.enumerated() {
            let (content, style) = (world.content[pair.content], world.style[pair.style])
            FileHandle.standardError.write(Data("row \(index + 1)/\(pairs.count): \"\(world.prompt(content: content, style: style))\" (\(content.label) + \(style.label))\n".utf8))
            rows.append(try columns.map { try generator.images(content: content, style: style, column: $0, seeds: [seed + UInt64(index)])[0] })
        }
        let grid = ImageGrid.compose(rows, cellWidth: world.width, cellHeight: world.height, scale: scale,
                                     columnTitles: labels ? columns.map(\.title) : [],
                                     rowTitles: labels ? pairs.map { "\(world.content[$0.content].trigger)+\(world.style[$0.style].trigger)" } : [],
                                     textScale: max(1, scale / 2))
        let legend = "columns: \(columns.map(\.rawValue).joined(separator: ", ")); rows: " +
            pairs.map { "\(world.content[$0.content].trigger)+\(world.style[$0.style].trigger)" }.joined(separator: ", ")
        try PNGWriter.write(pixels: grid.pixels, width: grid.width, height: grid.height,
                            text: [("Description", legend), ("Software", "LoRAFuse \(LoRAFuseCommand.configuration.version) demo")], to: output)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        print(String(format: "wrote %@ (%d×%d): %@ — %d images on %@ in %.1f s", output, grid.width, grid.height, legend,
                     rows.count * columns.count, backend.name, seconds))
    }
}

/// `lorafuse eval`: measurements on the toy world.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Measure fusion and retrieval on the toy world.",
        subcommands: [EvalFusionCommand.self, EvalRetrievalCommand.self]
    )
}

/// `lorafuse eval fusion`: K-LoRA's paper's table, scored by every judge of the world, each
/// figure with a 95 % bootstrap interval over pairs and seeds.
struct EvalFusionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fusion",
        abstract: "Score fusion methods on content+style pairs: object, style and both, with 95 % bootstrap intervals, per judge.",
        discussion: """
        For each pair and seed, each method generates the pair's prompt ("a zorbo in lumeq style"); every judge of the \
        world (a pair of classifiers: object, 18 shapes; style, 18 textures) scores the image. object: the share of images \
        classified as the content's shape; style: as the style's texture; both: as both. Two rows come first: each content \
        LoRA alone with its own trigger prompt (scored on object) and each style LoRA alone with its own (scored on style). \
        Intervals: two-stage percentile bootstrap (pairs, then seeds inside each pair, with replacement), the same draws \
        for every method, so the differences listed are paired. --json gives every image's scores.
        """
    )

    @OptionGroup var location: WorldLocation

    @Option(name: .long, parsing: .unconditional, help: "Content+style pairs (every content concept, styles rotated).")
    var pairs = 10

    @Option(name: .long, parsing: .unconditional, help: "Seeds per pair (and per LoRA for the alone rows).")
    var seeds = 16

    @Option(name: .long, parsing: .upToNextOption, help: "Methods, in order (default: all the world supports).")
    var methods: [FusionColumn] = []

    @Option(name: .customLong("merge-scales"), parsing: .upToNextOption, help: "Extra merge rows with both LoRAs at each of these scales (the merge sweep).")
    var mergeScales: [Double] = []

    @Flag(name: .long, inversion: .prefixedNo, help: "The rows of each LoRA alone with its own trigger prompt.")
    var alone = true

    @Option(name: .long, parsing: .unconditional, help: "Bootstrap resamples.")
    var resamples = 2000

    @OptionGroup var backendOptions: BackendOptions

    @Flag(name: .long, help: "Print JSON (with every image's scores) instead of the tables.")
    var json = false

    func validate() throws {
        guard pairs >= 1, seeds >= 1 else { throw ValidationError("--pairs and --seeds must be at least 1") }
        guard (1...100_000).contains(resamples) else { throw ValidationError("--resamples must be in 1...100000, got \(resamples)") }
        for scale in mergeScales where !(scale.isFinite && abs(scale) <= 100) {
            throw ValidationError("--merge-scales takes finite scales in [−100, 100], got \(scale)")
        }
    }

    /// One row of the table: which LoRAs, which prompt, which clusters its images fall into.
    struct Condition {
        enum Kind: String { case contentAlone = "content_alone", styleAlone = "style_alone", fusion }
        let name: String
        let kind: Kind
        /// Per cluster: generate's LoRA options, the prompt, and the target classes' labels.
        let clusters: [(arguments: [String], prompt: String, content: ToyWorld.Concept?, style: ToyWorld.Concept?)]
    }

    /// Scores of one condition under one judge, [cluster][seed].
    struct Scores {
        var object: [[Double]], style: [[Double]], both: [[Double]], objectProbability: [[Double]], styleProbability: [[Double]]
        var predicted: [[(object: String, style: String)]]
    }

    func conditions(_ world: ToyWorld) throws -> [Condition] {
        let pairs = world.evaluationPairs(self.pairs).map { (world.content[$0.content], world.style[$0.style]) }
        var conditions: [Condition] = []
        if alone {
            var contents: [ToyWorld.Concept] = [], styles: [ToyWorld.Concept] = []
            for (content, style) in pairs {
                if !contents.contains(content) { contents.append(content) }
                if !styles.contains(style) { styles.append(style) }
            }
            conditions.append(Condition(name: "content alone", kind: .contentAlone,
                                        clusters: contents.map { (["--lora", $0.lora], $0.caption, $0, nil) }))
            conditions.append(Condition(name: "style alone", kind: .styleAlone,
                                        clusters: styles.map { (["--lora", $0.lora], $0.caption, nil, $0) }))
        }
        let methods = self.methods.isEmpty ? FusionColumn.allCases.filter { $0 != .autolora || world.merger != nil } : self.methods
        for method in methods {
            conditions.append(Condition(name: method.rawValue, kind: .fusion, clusters: try pairs.map { content, style in
                (try method.arguments(content: content, style: style, merger: world.merger), world.prompt(content: content, style: style), content, style)
            }))
            if method == .merge {
                for scale in mergeScales {
                    conditions.append(Condition(name: "merge×\(scale)", kind: .fusion, clusters: pairs.map { content, style in
                        (["--fusion", "merge", "--content", "\(content.lora):\(scale)", "--style", "\(style.lora):\(scale)"],
                         world.prompt(content: content, style: style), content, style)
                    }))
                }
            }
        }
        return conditions
    }

    func run() throws {
        let world = try location.load()
        guard !world.judges.isEmpty else { throw ValidationError("this world has no classifiers (`classifiers` or `judges` in world.json)") }
        let backend = try backendOptions.makeBackend()
        let judges = try world.judges.map { ($0.name, try ImageClassifier.load(path: $0.object), try ImageClassifier.load(path: $0.style)) }
        for (name, objects, styles) in judges {
            for concept in world.content where !objects.classes.contains(concept.label) {
                throw ValidationError("judge \(name)'s object classifier does not know \(concept.label)")
            }
            for concept in world.style where !styles.classes.contains(concept.label) {
                throw ValidationError("judge \(name)'s style classifier does not know \(concept.label)")
            }
        }
        let generator = try WorldGenerator(world: world, backend: backend)
        let conditions = try conditions(world)
        let seedValues = (0..<seeds).map { UInt64(1000 + $0) }
        let start = DispatchTime.now().uptimeNanoseconds
        // scores[condition][judge]
        var scores: [[Scores]] = []
        for (index, condition) in conditions.enumerated() {
            let images = try condition.clusters.flatMap { try generator.images(arguments: $0.arguments, prompt: $0.prompt, seeds: seedValues) }
            var perJudge: [Scores] = []
            for (_, objects, styles) in judges {
                let objectScores = try objects.classify(images: images, width: world.width, height: world.height, on: backend)
                let styleScores = try styles.classify(images: images, width: world.width, height: world.height, on: backend)
                var judged = Scores(object: [], style: [], both: [], objectProbability: [], styleProbability: [], predicted: [])
                for (clusterIndex, cluster) in condition.clusters.enumerated() {
                    let objectTarget = cluster.content.flatMap { objects.classes.firstIndex(of: $0.label) }
                    let styleTarget = cluster.style.flatMap { styles.classes.firstIndex(of: $0.label) }
                    var row = (object: [Double](), style: [Double](), both: [Double](), objectP: [Double](), styleP: [Double]())
                    var predicted: [(object: String, style: String)] = []
                    for seed in 0..<seeds {
                        let image = clusterIndex * seeds + seed
                        let (objectClass, styleClass) = (Self.argmax(objectScores[image]), Self.argmax(styleScores[image]))
                        let objectHit = objectClass == objectTarget, styleHit = styleClass == styleTarget
                        row.object.append(objectHit ? 1 : 0)
                        row.style.append(styleHit ? 1 : 0)
                        row.both.append(objectHit && styleHit ? 1 : 0)
                        row.objectP.append(objectTarget.map { Double(objectScores[image][$0]) } ?? 0)
                        row.styleP.append(styleTarget.map { Double(styleScores[image][$0]) } ?? 0)
                        predicted.append((objects.classes[objectClass], styles.classes[styleClass]))
                    }
                    judged.object.append(row.object)
                    judged.style.append(row.style)
                    judged.both.append(row.both)
                    judged.objectProbability.append(row.objectP)
                    judged.styleProbability.append(row.styleP)
                    judged.predicted.append(predicted)
                }
                perJudge.append(judged)
            }
            scores.append(perJudge)
            if !json {
                FileHandle.standardError.write(Data("\(index + 1)/\(conditions.count) \(condition.name): \(images.count) images\n".utf8))
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        try report(world: world, backend: backend, judges: judges.map(\.0), conditions: conditions, scores: scores, seconds: seconds)
    }

    /// The metrics a condition is judged on: alone rows on their own concept only.
    static func metrics(_ kind: Condition.Kind) -> [String] {
        switch kind {
        case .contentAlone: ["object"]
        case .styleAlone: ["style"]
        case .fusion: ["object", "style", "both"]
        }
    }

    static func probabilities(_ scores: Scores, _ metric: String) -> [[Double]] {
        metric == "object" ? scores.objectProbability : scores.styleProbability
    }

    static func values(_ scores: Scores, _ metric: String) -> [[Double]] {
        switch metric {
        case "object": scores.object
        case "style": scores.style
        default: scores.both
        }
    }

    func report(world: ToyWorld, backend: any Backend, judges: [String], conditions: [Condition], scores: [[Scores]], seconds: Double) throws {
        func isJudged(_ condition: Condition, _ metric: String) -> Bool { Self.metrics(condition.kind).contains(metric) }
        func mean(_ values: [[Double]]) -> Double { values.joined().reduce(0, +) / Double(max(1, values.joined().count)) }
        var bootstraps: [Int: Bootstrap] = [:]
        func bootstrap(_ clusters: Int) -> Bootstrap {
            if let made = bootstraps[clusters] { return made }
            let made = Bootstrap(clusters: clusters, seeds: seeds, resamples: resamples, seed: 2025)
            bootstraps[clusters] = made
            return made
        }
        func interval(_ value: Bootstrap.Interval) -> [String: Double] { ["mean": value.mean, "low": value.low, "high": value.high] }
        // intervals[condition][judge][metric]
        let intervals = conditions.indices.map { c in
            judges.indices.map { j in
                Dictionary(uniqueKeysWithValues: Self.metrics(conditions[c].kind).map {
                    ($0, bootstrap(conditions[c].clusters.count).interval(Self.values(scores[c][j], $0)))
                })
            }
        }
        // Paired differences between the fusion rows, every judge and metric.
        let fusion = conditions.indices.filter { conditions[$0].kind == .fusion }
        var differences: [(a: Int, b: Int, judge: Int, metric: String, interval: Bootstrap.Interval)] = []
        for (position, a) in fusion.enumerated() {
            for b in fusion[(position + 1)...] {
                for judge in judges.indices {
                    for metric in ["object", "style", "both"] {
                        let difference = bootstrap(conditions[a].clusters.count).difference(Self.values(scores[a][judge], metric),
                                                                                            Self.values(scores[b][judge], metric))
                        differences.append((a, b, judge, metric, difference))
                    }
                }
            }
        }
        if json {
            var rows: [[String: Any]] = []
            var images: [[String: Any]] = []
            for (c, condition) in conditions.enumerated() {
                var perJudge: [String: Any] = [:]
                for (j, judge) in judges.enumerated() {
                    var entry: [String: Any] = [:]
                    for metric in ["object", "style"] {
                        entry["\(metric)_probability"] = isJudged(condition, metric) ? mean(Self.probabilities(scores[c][j], metric)) as Any : NSNull()
                    }
                    for (metric, value) in intervals[c][j] { entry[metric] = interval(value) }
                    entry["per_cluster"] = condition.clusters.indices.map { cluster -> [String: Any] in
                        var item: [String: Any] = ["content": condition.clusters[cluster].content?.trigger ?? NSNull(),
                                                   "style": condition.clusters[cluster].style?.trigger ?? NSNull()]
                        for metric in Self.metrics(condition.kind) { item[metric] = mean([Self.values(scores[c][j], metric)[cluster]]) }
                        return item
                    }
                    perJudge[judge] = entry
                }
                var row: [String: Any] = ["method": condition.name, "kind": condition.kind.rawValue, "images": condition.clusters.count * seeds,
                                          "judges": perJudge]
                // The first judge's figures at the top level, as before judges were added.
                for metric in ["object", "style", "both"] {
                    row[metric] = Self.metrics(condition.kind).contains(metric) ? mean(Self.values(scores[c][0], metric)) : NSNull()
                }
                for metric in ["object", "style"] {
                    row["\(metric)_probability"] = isJudged(condition, metric) ? mean(Self.probabilities(scores[c][0], metric)) as Any : NSNull()
                }
                rows.append(row)
                for (cluster, item) in condition.clusters.enumerated() {
                    for seed in 0..<seeds {
                        var judged: [String: Any] = [:]
                        for (j, judge) in judges.enumerated() {
                            let s = scores[c][j]
                            judged[judge] = ["object_class": s.predicted[cluster][seed].object, "style_class": s.predicted[cluster][seed].style,
                                             "object": s.object[cluster][seed] == 1, "style": s.style[cluster][seed] == 1,
                                             "object_probability": isJudged(condition, "object") ? s.objectProbability[cluster][seed] as Any : NSNull(),
                                             "style_probability": isJudged(condition, "style") ? s.styleProbability[cluster][seed] as Any : NSNull()]
                        }
                        images.append(["method": condition.name, "prompt": item.prompt, "content": item.content?.trigger ?? NSNull(),
                                       "style": item.style?.trigger ?? NSNull(), "seed": 1000 + seed, "judges": judged])
                    }
                }
            }
            let differenceRows: [[String: Any]] = differences.map {
                ["a": conditions[$0.a].name, "b": conditions[$0.b].name, "judge": judges[$0.judge], "metric": $0.metric,
                 "difference": interval($0.interval), "separated": $0.interval.excludes(0)]
            }
            print(try JSONOutput.line(["command": "eval fusion", "backend": backend.name, "pairs": fusion.first.map { conditions[$0].clusters.count } ?? 0,
                                       "seeds": seeds, "steps": world.steps, "seconds": seconds, "judges": judges, "resamples": resamples,
                                       "interval": "95 % percentile bootstrap over pairs (LoRAs for the alone rows), then seeds within each",
                                       "methods": rows, "differences": differenceRows, "images": images]))
            return
        }
        let pairCount = fusion.first.map { conditions[$0].clusters.count } ?? 0
        print("fusion on the toy world: \(pairCount) pairs × \(seeds) seeds, \(world.steps) steps, \(backend.name) (\(String(format: "%.0f", seconds)) s); "
              + "95 % bootstrap intervals over pairs and seeds (\(resamples) resamples)")
        func cell(_ value: Bootstrap.Interval?) -> String {
            guard let value else { return "—".padding(toLength: 20, withPad: " ", startingAt: 0) }
            return String(format: "%.3f [%.3f, %.3f]  ", value.mean, value.low, value.high)
        }
        let width = max(16, conditions.map(\.name.count).max() ?? 0)
        for (j, judge) in judges.enumerated() {
            print("\njudge \(judge)")
            print("method".padding(toLength: width, withPad: " ", startingAt: 0) + "  object                style                 both")
            for (c, condition) in conditions.enumerated() {
                print(condition.name.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                      + cell(intervals[c][j]["object"]) + cell(intervals[c][j]["style"]) + cell(intervals[c][j]["both"]))
            }
            let separated = differences.filter { $0.judge == j && $0.metric == "both" && $0.interval.excludes(0) }
            if separated.isEmpty {
                print("no two methods' \"both\" differ outside the 95 % interval of their paired difference")
            } else {
                print("\"both\" differences outside the 95 % interval (paired):")
                for item in separated {
                    let (better, worse, sign) = item.interval.mean > 0 ? (item.a, item.b, 1.0) : (item.b, item.a, -1.0)
                    print(String(format: "  %@ > %@: %+.3f [%+.3f, %+.3f]", conditions[better].name, conditions[worse].name,
                                 sign * item.interval.mean, sign > 0 ? item.interval.low : -item.interval.high,
                                 sign > 0 ? item.interval.high : -item.interval.low))
                }
            }
        }
    }

    static func argmax(_ values: [Float]) -> Int { values.indices.max { values[$0] < values[$1] } ?? 0 }
}

/// `lorafuse eval retrieval`: the world's LoRAs in a fresh pool, searched with held-out captions.
struct EvalRetrievalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retrieval",
        abstract: "Recall@1 and @5 of `pool search` on the toy world's held-out captions.",
        discussion: """
        Adds every LoRA of the world to a pool (a temporary one unless --db is given) with the world's trained weight \
        encoder, then searches each held-out caption (world.json `retrieval_queries`, captions the retriever never saw) \
        and checks where the LoRA it names ranks. --query adds captions of your own: CAPTION=LORA_FILE_NAME.
        """
    )

    @OptionGroup var location: WorldLocation

    @Option(name: .long, help: "Keep the pool in this SQLite file (default: a temporary one).")
    var db: String?

    @Option(name: .long, help: "An extra query, CAPTION=LORA_FILE_NAME (e.g. \"a zorbo on grass=content-zorbo.safetensors\"); repeat.")
    var query: [String] = []

    @OptionGroup var backendOptions: BackendOptions

    @Flag(name: .long, help: "Print JSON instead of the summary.")
    var json = false

    func run() throws {
        let world = try location.load()
        guard let retriever = world.retriever else { throw ValidationError("this world has no retriever (`retriever` in world.json)") }
        var queries = world.retrievalQueries
        for extra in query {
            guard let split = extra.lastIndex(of: "="), split != extra.startIndex else { throw ValidationError("--query takes CAPTION=LORA_FILE_NAME, got \(extra)") }
            let name = String(extra[extra.index(after: split)...])
            guard let lora = (world.content + world.style).map(\.lora).first(where: { URL(fileURLWithPath: $0).lastPathComponent == name }) else {
                throw ValidationError("--query: no LoRA named \(name) in the world")
            }
            queries.append((lora, String(extra[..<split])))
        }
        guard !queries.isEmpty else { throw ValidationError("no queries: the world lists no `retrieval_queries` and no --query was given") }
        let backend = try backendOptions.makeBackend()
        let temporary = FileManager.default.temporaryDirectory.appendingPathComponent("lorafuse-eval-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: temporary) }
        let pool = try LoRAPool(path: db ?? temporary.appendingPathComponent("pool.sqlite").path)
        let encoder = try LoRAWeightEncoder.load(path: retriever)
        for concept in world.content + world.style {
            try pool.add(path: concept.lora, caption: concept.caption, encoder: encoder, on: backend)
        }
        let queryEncoder = try RetrievalQueryEncoder.load(pipeline: world.pipeline)
        var (top1, top5) = (0, 0)
        var results: [[String: Any]] = []
        let start = DispatchTime.now().uptimeNanoseconds
        for (lora, caption) in queries {
            let matches = try pool.search(try queryEncoder.embed(caption, on: backend), k: 5, encoderVersion: encoder.version)
            let target = URL(fileURLWithPath: lora).standardizedFileURL.path
            let rank = matches.firstIndex { $0.entry.path == target }.map { $0 + 1 }
            top1 += rank == 1 ? 1 : 0
            top5 += rank != nil ? 1 : 0
            results.append(["caption": caption, "expected": URL(fileURLWithPath: lora).lastPathComponent, "rank": rank ?? NSNull(),
                            "found": matches.first.map { URL(fileURLWithPath: $0.entry.path).lastPathComponent } ?? NSNull()])
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let n = Double(queries.count)
        if json {
            print(try JSONOutput.line(["command": "eval retrieval", "backend": backend.name, "loras": world.content.count + world.style.count,
                                       "queries": queries.count, "recall_at_1": Double(top1) / n, "recall_at_5": Double(top5) / n,
                                       "seconds_per_query": seconds / n, "results": results]))
            return
        }
        for result in results where (result["rank"] as? Int) != 1 {
            print("  \"\(result["caption"]!)\": expected \(result["expected"]!), rank \(result["rank"] is NSNull ? "> 5" : "\(result["rank"]!)"), found \(result["found"]!)")
        }
        print(String(format: "retrieval on the toy world: %d LoRAs, %d held-out captions: recall@1 %.3f, recall@5 %.3f (%.1f ms per query with the CLIP encoding, %@)",
                     world.content.count + world.style.count, queries.count, Double(top1) / n, Double(top5) / n, seconds / n * 1000, backend.name))
    }
}
