# Stage 6: the report, from the result JSONs of the default target (reference policies, online
# agents, offline algorithms), passed as its inputs: stale results of earlier configurations left
# under results/ stay out. Tables, figures and CSVs go to results/report/.


rule report:
    input:
        [t for t in all_targets() if t.startswith("results/") and t.endswith(".json")],
    output:
        markdown=A.REPORT,
        figures=directory(A.REPORT_DIR),
    params:
        envs=",".join(config["envs"]),
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/report/report.tsv"
    threads: 1
    conda:
        "../../envs/slate_rl.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "slate-rl report --threads {threads} --results-dir results --inputs {input} --envs {params.envs} "
        "--output {output.markdown} "
        "--figures-dir {output.figures} > {log} 2>&1"
