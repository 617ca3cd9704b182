"""IHVC body model: rotations, the 31-value layout, the parameter-file format and its errors, meshes, PROXY targets."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines import body_model as bm
from gfvc.errors import InputError, ModelMismatch, NotAvailable

LAYOUT = bm.get_layout(bm.DEFAULT_LAYOUT)


@pytest.fixture(scope="module")
def proxy() -> bm.BodyMesh:
    return bm.proxy_mesh(LAYOUT)


def random_vectors(n: int, seed: int = 0, scale: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, LAYOUT.dim)).astype(np.float32) * scale
    v[:, 0] += 1.0   # log scale ~ e
    return v


# ----------------------------------------------------------------------------- rotations
def test_rotation_round_trip_including_near_pi_and_tiny_angles():
    g = torch.Generator().manual_seed(0)
    axis = torch.randn(500, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=1, keepdim=True)
    angles = torch.cat([torch.rand(400, 1, generator=g, dtype=torch.float64) * 3.0,
                        torch.full((50, 1), math.pi - 1e-4, dtype=torch.float64),
                        torch.full((50, 1), 1e-7, dtype=torch.float64)])
    aa = axis * angles
    r = bm.axis_angle_to_matrix(aa)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(500, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(r), torch.ones(500, dtype=torch.float64))
    assert torch.allclose(bm.matrix_to_axis_angle(r), aa, atol=1e-6)
    # 90 degrees about z maps x to y
    rz = bm.axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    assert torch.allclose(rz @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)


def test_rotation_gradient_is_finite_at_zero():
    aa = torch.zeros(2, 3, requires_grad=True)
    bm.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()


# ----------------------------------------------------------------------------- layout
def test_layout_has_31_named_values_in_documented_order():
    names = LAYOUT.names()
    assert LAYOUT.dim == 31 == len(names) == len(set(names))
    assert names[:6] == ["camera.log_scale", "camera.tx", "camera.ty", "global.x", "global.y", "global.z"]
    assert names[-4:] == ["jaw.x", "expression.0", "expression.1", "expression.2"]
    sl = LAYOUT.slices()
    assert sum(s.stop - s.start for s in sl.values()) == 31
    with pytest.raises(ModelMismatch):
        bm.get_layout("nope")


def test_mirror_is_an_involution_and_mirrors_joint_rotations(proxy):
    v = torch.from_numpy(random_vectors(5))
    m = bm.mirror_vectors(v, LAYOUT)
    assert torch.allclose(bm.mirror_vectors(m, LAYOUT), v)
    assert torch.allclose(m[:, 1], -v[:, 1]) and torch.allclose(m[:, 0], v[:, 0])
    flip = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))
    r, rm = proxy.rotations(v), proxy.rotations(m)
    for a, b in (("left_shoulder", "right_shoulder"), ("left_elbow", "right_elbow"), ("neck", "neck"),
                 ("head", "head")):
        assert torch.allclose(rm[:, bm.JOINT[b]], flip @ r[:, bm.JOINT[a]] @ flip, atol=1e-5), a
    # the global orientation (upright reference included) mirrors the same way
    assert torch.allclose(rm[:, 0], flip @ r[:, 0] @ flip, atol=1e-5)


# ----------------------------------------------------------------------------- parameter files
def test_params_round_trip_through_the_file_format(tmp_path):
    vec = random_vectors(6)
    params = bm.vectors_to_params(vec, LAYOUT, "unit-test")
    p = bm.write_params(tmp_path / "seq.npz", params)
    back = bm.read_params(p)
    assert back.source == "unit-test" and not back.is_osx and back.frames == 6 and len(back.sha256) == 64
    assert np.allclose(bm.params_to_vectors(back, LAYOUT), vec, atol=2e-5)
    # unsent joints are zero; the first `frames` rows are used
    assert np.all(back.body_pose[:, bm.JOINT["left_knee"] - 1] == 0)
    assert bm.read_params(p, frames=4).frames == 4


def osx_style(t: int = 3) -> dict[str, np.ndarray]:
    """The keys OSX's test output uses (main/OSX.py) plus the camera intrinsics of its crop."""
    rng = np.random.default_rng(1)
    return {"source": np.array("osx"), "smplx_root_pose": np.tile([math.pi, 0.0, 0.0], (t, 1)),
            "smplx_body_pose": rng.normal(size=(t, 63)) * 0.1, "smplx_jaw_pose": rng.normal(size=(t, 3)) * 0.1,
            "smplx_expr": rng.normal(size=(t, 10)), "smplx_shape": rng.normal(size=(10,)),
            "cam_trans": np.tile([0.05, -0.02, 20.0], (t, 1)), "focal": np.array([5000.0, 5000.0]),
            "princpt": np.array([96.0, 128.0]), "image_size": np.array([128.0, 128.0]),
            "crop_to_image": np.array([[0.5, 0.0, 16.0], [0.0, 0.5, -0.0]])}


def test_osx_names_and_perspective_camera_are_converted(tmp_path):
    d = osx_style()
    np.savez(tmp_path / "osx.npz", **d)
    p = bm.read_params(tmp_path / "osx.npz")
    assert p.is_osx and p.body_pose.shape == (3, 21, 3) and p.betas.shape == (3, 10)
    # a body point X near the camera axis projects to the same normalised position both ways
    X = np.array([0.1, -0.2, 0.0])
    f, c, a, t = d["focal"], d["princpt"], d["crop_to_image"], d["cam_trans"][0]
    xc = f * (X[:2] + t[:2]) / (X[2] + t[2]) + c
    xi = np.array([a[0, 0] * xc[0] + a[0, 2], a[1, 1] * xc[1] + a[1, 2]])
    expected = xi * 2 / 127 - 1
    s, tx, ty = p.camera[0]
    assert np.allclose([s * X[0] + tx, s * X[1] + ty], expected, atol=1e-5)
    # upright person: root pose pi about x -> global orientation 0 in the vector
    vec = bm.params_to_vectors(p, LAYOUT)
    assert np.allclose(vec[:, 3:6], 0, atol=1e-5)


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.pop("smplx_body_pose"), "body_pose"),
    (lambda d: d.update(smplx_jaw_pose=np.zeros((3, 2))),
     "'smplx_jaw_pose' has shape (3, 2), expected (T, 3) with T = 3 frames"),
    (lambda d: d.update(smplx_expr=np.full((3, 10), np.nan)), "NaN"),
    (lambda d: d.pop("source"), "'source'"),
    (lambda d: d.update(camera=np.ones((3, 3))), "exactly one camera"),
    (lambda d: d.pop("focal"), "'focal'"),
    (lambda d: d.update(cam_trans=np.tile([0, 0, -1.0], (3, 1))), "z must be > 0"),
    (lambda d: d.update(crop_to_image=np.array([[0.5, 0.2, 0.0], [0.0, 0.5, 0.0]])), "no rotation or shear"),
    (lambda d: d.update(focal=np.array([5000.0, 3000.0])), "scales x and y differently"),
    (lambda d: d.update(format=np.array("other-v9")), "format 'other-v9'"),
    (lambda d: d.update(smplx_body_pose=np.zeros((2, 63))), "expected (T, 21, 3) with T = 3"),
    (lambda d: d.update(smplx_body_pose=np.zeros((3, 69))), "expected (T, 21, 3)"),  # SMPL's 23 joints, not SMPL-X
])
def test_bad_parameter_files_give_one_line_errors(tmp_path, edit, needle):
    d = osx_style()
    edit(d)
    np.savez(tmp_path / "bad.npz", **d)
    with pytest.raises(InputError) as e:
        bm.read_params(tmp_path / "bad.npz")
    msg = str(e.value)
    assert "\n" not in msg and needle in msg and "bad.npz" in msg


def test_unreadable_and_missing_parameter_files(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable"):
        bm.read_params(tmp_path / "x.npz")
    np.savez(tmp_path / "obj.npz", source=np.array({"a": 1}, dtype=object))
    with pytest.raises(InputError, match="object arrays|'source'"):
        bm.read_params(tmp_path / "obj.npz")
    with pytest.raises(NotAvailable):
        bm.read_params(tmp_path / "missing.npz")
    p = bm.write_params(tmp_path / "short.npz", bm.vectors_to_params(random_vectors(2), LAYOUT, "t"))
    with pytest.raises(InputError, match="2 frames, the sequence has 5"):
        bm.read_params(p, frames=5)


def test_only_the_declared_source_osx_is_osx(tmp_path):
    for src, osx in (("osx", True), ("OSX-like", False), (bm.PROXY_TARGETS_NAME, False)):
        p = bm.write_params(tmp_path / "s.npz", bm.vectors_to_params(random_vectors(2), LAYOUT, src))
        assert bm.read_params(p).is_osx is osx


# ----------------------------------------------------------------------------- meshes
def test_proxy_mesh_is_deterministic_and_labelled(proxy):
    assert proxy.num_vertices == bm.NUM_VERTICES and proxy.kind == "proxy" and "PROXY" in proxy.label
    assert bm.proxy_mesh(LAYOUT).fingerprint == proxy.fingerprint != bm.proxy_mesh(LAYOUT, seed=1).fingerprint
    assert proxy.state_dict() == {}  # nothing of the template goes into checkpoints


def test_reference_placement_and_semantics_move_the_right_vertices(proxy):
    ref = bm.reference_vector(proxy, head_centre=(0.1, -0.3), head_height=0.6)
    v = proxy(ref)[0]
    owner = proxy.weights.argmax(1)
    head = torch.isin(owner, torch.tensor([bm.JOINT["head"], bm.JOINT["jaw"]]))
    box = v[head]
    assert abs(float(box[:, 1].max() - box[:, 1].min()) - 0.6) < 0.02
    assert abs(float((box[:, 1].max() + box[:, 1].min()) / 2) + 0.3) < 0.02
    assert float(v[owner == bm.JOINT["left_elbow"], 1].mean()) > float(v[head, 1].mean())  # arms hang below head
    names = LAYOUT.names()
    jaw = ref.clone()
    jaw[0, names.index("jaw.x")] = 0.4
    moved = (proxy(jaw)[0] - v).norm(dim=1) > 1e-6
    assert moved.any() and torch.equal(moved, owner == bm.JOINT["jaw"])
    expr = ref.clone()
    expr[0, names.index("expression.0")] = 2.0
    assert torch.equal(proxy(expr)[0], v)  # the proxy has no face blend shapes
    shift = ref.clone()
    shift[0, 1] += 0.25
    assert torch.allclose(proxy(shift)[0] - v, torch.tensor([0.25, 0.0]).expand_as(v), atol=1e-6)


def fake_smplx(path: Path, n_vertices: int = bm.NUM_VERTICES, columns: int = 20, **override) -> Path:
    """An SMPL-X-shaped file built from the PROXY template (so its LBS must equal the proxy mesh's)."""
    verts, joint_of, joints = bm.proxy_template()
    verts = verts[:n_vertices].copy()
    reg = np.zeros((bm.NUM_JOINTS, n_vertices), np.float32)
    for j in range(bm.NUM_JOINTS):  # the regressor picks one vertex placed at the joint
        reg[j, j] = 1.0
        verts[j] = joints[j]
    weights = np.zeros((n_vertices, bm.NUM_JOINTS), np.float32)
    weights[np.arange(n_vertices), joint_of[:n_vertices]] = 1.0
    parents = np.array([2 ** 32 - 1] + list(bm.SMPLX_PARENTS[1:]), np.uint32)
    d = {"v_template": verts, "weights": weights, "J_regressor": reg,
         "kintree_table": np.stack([parents, np.arange(bm.NUM_JOINTS, dtype=np.uint32)]),
         "shapedirs": np.random.default_rng(0).normal(size=(n_vertices, 3, columns)).astype(np.float32) * 0.01,
         "f": np.zeros((4, 3), np.int32)}
    d.update(override)
    np.savez(path, **{k: v for k, v in d.items() if v is not None})
    return path


def test_smplx_file_lbs_equals_the_proxy_for_the_same_template(tmp_path, proxy, monkeypatch):
    path = fake_smplx(tmp_path / "SMPLX_NEUTRAL.npz")
    mesh = bm.smplx_mesh(path, LAYOUT)
    assert mesh.kind == "smplx" and mesh.expr_dirs.shape == (bm.NUM_VERTICES, 3, 3)
    vec = torch.from_numpy(random_vectors(3))
    vec[:, LAYOUT.slices()["expression"]] = 0
    a, b = mesh(vec), proxy(vec)
    keep = torch.arange(bm.NUM_JOINTS, bm.NUM_VERTICES)  # the first 55 vertices were moved onto the joints
    assert torch.allclose(a[:, keep], b[:, keep], atol=1e-4)
    vec[:, -1] = 1.0
    assert not torch.allclose(mesh(vec), a)  # expression blend shapes act
    monkeypatch.setenv("GFVC_SMPLX_MODEL", str(path))
    assert bm.build_mesh("smplx", LAYOUT).fingerprint == mesh.fingerprint
    with pytest.raises(ModelMismatch, match="not the one the model was trained with"):
        bm.build_mesh("smplx", LAYOUT, fingerprint="0" * 16)


def test_wrong_body_model_files_are_refused(tmp_path, monkeypatch):
    smpl = fake_smplx(tmp_path / "SMPL.npz", n_vertices=6890)
    with pytest.raises(ModelMismatch, match="not an SMPL-X model") as e:
        bm.smplx_mesh(smpl, LAYOUT)
    assert "\n" not in str(e.value)
    nokeys = fake_smplx(tmp_path / "nokeys.npz", J_regressor=None)
    with pytest.raises(ModelMismatch, match="no J_regressor"):
        bm.smplx_mesh(nokeys, LAYOUT)
    badpose = fake_smplx(tmp_path / "badpose.npz", posedirs=np.zeros((bm.NUM_VERTICES, 3, 2), np.float32))
    with pytest.raises(ModelMismatch, match="posedirs"):
        bm.smplx_mesh(badpose, LAYOUT)
    (tmp_path / "model.pkl").write_bytes(b"x")
    with pytest.raises(ModelMismatch, match=".npz release"):
        bm.smplx_mesh(tmp_path / "model.pkl", LAYOUT)
    with pytest.raises(NotAvailable, match="cannot ship"):
        bm.smplx_mesh(tmp_path / "absent.npz", LAYOUT)
    monkeypatch.delenv("GFVC_SMPLX_MODEL", raising=False)
    with pytest.raises(NotAvailable, match="GFVC_SMPLX_MODEL"):
        bm.build_mesh("smplx", LAYOUT)
    with pytest.raises(ModelMismatch, match="unknown IHVC mesh"):
        bm.build_mesh("flame", LAYOUT)


def test_learned_estimator_shape():
    est = bm.SemanticEstimator(dim=31, block_expansion=4, num_blocks=3, max_features=16, hidden=8)
    assert est(torch.rand(2, 3, 64, 64)).shape == (2, 31)


# ----------------------------------------------------------------------------- PROXY targets
def test_proxy_targets_follow_a_global_shift(proxy):
    """A texture translated right by 2 px per frame: the fitted camera tx moves right by that much."""
    rng = np.random.default_rng(0)
    tex = (rng.random((16, 16, 3)) * 255).astype(np.uint8)
    from scipy import ndimage

    base = ndimage.zoom(tex, (4, 4, 1), order=1)
    frames = np.stack([np.roll(base, 2 * t, axis=1) for t in range(3)])
    vec, info = bm.proxy_semantic_targets(frames, proxy, iters=60, stride=8, head_centre=(0.0, -0.2),
                                          head_height=0.5)
    assert vec.shape == (3, 31) and info["targets"].startswith("PROXY") and "not OSX" in info["note"]
    assert np.allclose(vec[0], bm.reference_vector(proxy, (0.0, -0.2), 0.5)[0].numpy(), atol=1e-6)
    step = 2 * 2 / 63
    dx = vec[1:, 1] - vec[0, 1]
    assert np.allclose(dx, [step, 2 * step], rtol=0.35), dx
    assert info["fit_l1_last"] < info["fit_l1_first"]
    assert np.all(vec[:, LAYOUT.slices()["expression"]] == 0)
