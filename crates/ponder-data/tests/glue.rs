//! GLUE readers on small files written in each task's real column layout (with its
//! header quirks), and the official metrics on hand-computed cases.

use std::path::Path;

use ponder_data::{
    DataError, GlueMetric, GlueSplit, GlueTask, glue_classification_score, glue_regression_score,
    read_glue,
};

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn read(dir: &Path, task: GlueTask, split: GlueSplit) -> ponder_data::GlueData {
    read_glue(dir, task, split).unwrap_or_else(|e| panic!("{}: {e}", task.name()))
}

#[test]
fn cola_has_no_header() {
    let dir = folder(&[(
        "train.tsv",
        "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n\
         gj04\t0\t*\tThey drank the pub.\r\n\n",
    )]);
    let d = read(dir.path(), GlueTask::Cola, GlueSplit::Train);
    assert_eq!(d.len(), 2);
    assert_eq!(d.examples[1].text, "They drank the pub.");
    assert_eq!((d.examples[0].label, d.examples[1].label), (1, 0));
    assert!(d.examples[0].text_pair.is_none());
    assert_eq!(GlueTask::Cola.metric(), GlueMetric::Matthews);
}

#[test]
fn sst2_quotes_are_text() {
    let dir = folder(&[(
        "dev.tsv",
        "sentence\tlabel\nit 's a \"charming\" and often affecting journey . \t1\nunflinchingly bleak\t0\n",
    )]);
    let d = read(dir.path(), GlueTask::Sst2, GlueSplit::Dev);
    assert_eq!(
        d.examples[0].text,
        "it 's a \"charming\" and often affecting journey . "
    );
    assert_eq!(d.examples[0].label, 1);
}

#[test]
fn mrpc_header_with_hashes_and_a_bom() {
    let dir = folder(&[(
        "train.tsv",
        "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n\
         1\t702876\t702977\tAmrozi accused his brother , whom he called \" the witness \" .\tReferring to him as only \" the witness \" , Amrozi accused his brother .\n\
         0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain .\tYucaipa bought Dominick 's in 1995 .\n",
    )]);
    let d = read(dir.path(), GlueTask::Mrpc, GlueSplit::Train);
    assert_eq!(d.len(), 2);
    assert_eq!(
        d.examples[1].text,
        "Yucaipa owned Dominick 's before selling the chain ."
    );
    assert_eq!(
        d.examples[1].text_pair.as_deref(),
        Some("Yucaipa bought Dominick 's in 1995 .")
    );
    assert_eq!(d.examples[0].label, 1);
}

#[test]
fn stsb_scores_are_real_numbers() {
    let dir = folder(&[(
        "dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n\
         0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n\
         1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a flute.\tA man is playing a bamboo flute.\t3.800\n",
    )]);
    let d = read(dir.path(), GlueTask::Stsb, GlueSplit::Dev);
    assert_eq!(d.scores, Some(vec![5.0, 3.8]));
    assert_eq!(
        d.examples[1].text_pair.as_deref(),
        Some("A man is playing a bamboo flute.")
    );
    let bad = folder(&[(
        "dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n\
         0\tg\tf\ty\to\ts\ts\ta\tb\tfive\n",
    )]);
    let err = read_glue(bad.path(), GlueTask::Stsb, GlueSplit::Dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("five"), "{err}");
}

#[test]
fn qqp_skips_and_counts_malformed_lines() {
    let dir = folder(&[(
        "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n\
         133273\t213221\t213222\tHow is the life of a math student?\tWhich level of prepration is enough?\t0\n\
         363362\t\tHow do I get rid of my anxiety?\n\
         402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1\n",
    )]);
    let d = read(dir.path(), GlueTask::Qqp, GlueSplit::Train);
    // short lines are skipped (the reference processor's IndexError)
    assert_eq!(d.len(), 2);
    assert_eq!(d.skipped_lines, vec![3]);
    assert_eq!(d.examples[1].label, 1);
    // a line with too many fields is an error naming it
    let long = folder(&[(
        "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n1\t2\t3\ta\tb\tc\t0\n",
    )]);
    let err = read_glue(long.path(), GlueTask::Qqp, GlueSplit::Train)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 2") && err.contains("7"), "{err}");
}

#[test]
fn mnli_label_is_the_last_column_and_dev_has_annotators() {
    let header_train = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label";
    let header_dev = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label";
    let dir = folder(&[
        (
            "train.tsv",
            &format!(
                "{header_train}\n0\t31193\t31193n\tgovernment\t( ( x ) )\t( y )\t(ROOT x)\t(ROOT y)\tConceptually cream skimming has two basic dimensions.\tProduct and geography are what make cream skimming work.\tcontradiction\tneutral\n"
            ),
        ),
        (
            "dev_matched.tsv",
            &format!(
                "{header_dev}\n0\t63735\t63735n\tslate\tb\tb\tp\tp\tThe new rights are nice enough\tEveryone really likes the newest benefits\tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n"
            ),
        ),
        (
            "dev_mismatched.tsv",
            &format!(
                "{header_dev}\n0\t75290\t75290c\tletters\tb\tb\tp\tp\tYour contribution helped make it possible.\tYour contributions were of no help.\tentailment\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n"
            ),
        ),
    ]);
    let train = read(dir.path(), GlueTask::Mnli, GlueSplit::Train);
    assert_eq!(train.examples[0].label, 2, "gold_label, not label1");
    assert_eq!(
        train.examples[0].text,
        "Conceptually cream skimming has two basic dimensions."
    );
    let matched = read(dir.path(), GlueTask::Mnli, GlueSplit::Dev);
    assert_eq!(matched.examples[0].label, 2, "gold_label, not label2");
    let mismatched = read(dir.path(), GlueTask::Mnli, GlueSplit::DevMismatched);
    assert_eq!(mismatched.examples[0].label, 0, "gold_label, not label1");
    assert!(read_glue(dir.path(), GlueTask::Rte, GlueSplit::DevMismatched).is_err());
}

#[test]
fn qnli_rte_wnli_read_by_header() {
    let dir = folder(&[
        (
            "qnli.tsv",
            "index\tquestion\tsentence\tlabel\n0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it ...\tnot_entailment\n",
        ),
        (
            "rte.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\tnot_entailment\n1\tA place of sorrow.\tA place of sadness.\tentailment\n",
        ),
        (
            "wnli.tsv",
            "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin through a carrot.\tThe carrot had a hole.\t1\n",
        ),
    ]);
    let q = ponder_data::read_glue_file(dir.path().join("qnli.tsv"), GlueTask::Qnli).unwrap();
    assert_eq!(
        q.examples[0].text,
        "When did the third Digimon series begin?"
    );
    assert_eq!(q.examples[0].label, 1);
    let r = ponder_data::read_glue_file(dir.path().join("rte.tsv"), GlueTask::Rte).unwrap();
    assert_eq!((r.examples[0].label, r.examples[1].label), (1, 0));
    let w = ponder_data::read_glue_file(dir.path().join("wnli.tsv"), GlueTask::Wnli).unwrap();
    assert_eq!(
        w.examples[0].text_pair.as_deref(),
        Some("The carrot had a hole.")
    );
}

#[test]
fn bad_files_name_the_problem() {
    // a missing column, an unknown label, a wrong field count, a missing file, no header
    let cases: [(GlueTask, &str, &[&str]); 4] = [
        (
            GlueTask::Rte,
            "index\tsentence1\tlabel\n0\ta\tentailment\n",
            &["sentence2", "RTE"],
        ),
        (
            GlueTask::Rte,
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
            &["maybe", "line 2"],
        ),
        (
            GlueTask::Sst2,
            "sentence\tlabel\na\tb\t1\n",
            &["line 2", "3"],
        ),
        (GlueTask::Sst2, "", &["header"]),
    ];
    for (task, text, needles) in cases {
        let dir = folder(&[("dev.tsv", text)]);
        let err = read_glue(dir.path(), task, GlueSplit::Dev).unwrap_err();
        let msg = err.to_string();
        for n in needles {
            assert!(msg.contains(n), "{}: {msg}", task.name());
        }
    }
    let err = read_glue(Path::new("/nonexistent"), GlueTask::Cola, GlueSplit::Train).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
    assert!(GlueTask::parse("sts_b").unwrap() == GlueTask::Stsb);
    assert!(GlueTask::parse("SST-2").unwrap() == GlueTask::Sst2);
    assert!(
        GlueTask::parse("squad")
            .unwrap_err()
            .to_string()
            .contains("CoLA")
    );
}

#[test]
fn metrics_equal_hand_values() {
    // labels 1,1,0,0,1 ; predictions 1,0,0,1,1: tp 2, fp 1, fn 1, tn 1
    let (p, l) = ([1, 0, 0, 1, 1], [1, 1, 0, 0, 1]);
    let mrpc = glue_classification_score(GlueTask::Mrpc, &p, &l).unwrap();
    assert_eq!(mrpc.accuracy, Some(0.6));
    assert!((mrpc.f1.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    let cola = glue_classification_score(GlueTask::Cola, &p, &l).unwrap();
    // (2·1 − 1·1) / sqrt(3·3·2·2) = 1/6
    assert!((cola.matthews.unwrap() - 1.0 / 6.0).abs() < 1e-12);
    assert!(cola.f1.is_none());
    // a constant prediction has Matthews 0 (sklearn's convention)
    let flat = glue_classification_score(GlueTask::Cola, &[1, 1, 1], &[1, 0, 1]).unwrap();
    assert_eq!(flat.matthews, Some(0.0));
    // no true positive: F1 is 0
    let none = glue_classification_score(GlueTask::Qqp, &[0, 0, 1], &[1, 1, 0]).unwrap();
    assert_eq!(none.f1, Some(0.0));
    let mnli = glue_classification_score(GlueTask::Mnli, &[0, 2, 1], &[0, 2, 2]).unwrap();
    assert!((mnli.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    // STS-B: Pearson of (1,2,3,4) and (2,4,5,9); Spearman with a tie
    let s = glue_regression_score(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 5.0, 9.0]).unwrap();
    // mean 2.5 / 5; cov = (-1.5·-3 + -0.5·-1 + 0.5·0 + 1.5·4) = 11; vx = 5; vy = 26
    assert!((s.pearson.unwrap() - 11.0 / (5.0f64 * 26.0).sqrt()).abs() < 1e-12);
    assert!((s.spearman.unwrap() - 1.0).abs() < 1e-12);
    let tied = glue_regression_score(&[1.0, 1.0, 2.0], &[1.0, 2.0, 3.0]).unwrap();
    // ranks (1.5, 1.5, 3) against (1, 2, 3): Pearson = 0.866…
    assert!((tied.spearman.unwrap() - 3f64.sqrt() / 2.0).abs() < 1e-12);
    assert!(glue_regression_score(&[1.0], &[1.0, 2.0]).is_err());
    assert!(glue_regression_score(&[f64::NAN, 1.0], &[1.0, 2.0]).is_err());
    assert!(glue_classification_score(GlueTask::Stsb, &[1], &[1]).is_err());
}
