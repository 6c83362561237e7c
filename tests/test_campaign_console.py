"""The console's identity page shows the campaign data: the estimated flag and the family (issue 22)."""

from __future__ import annotations

from test_console import Console, console  # noqa: F401 (the fixture)

DKR = {"region_code": "DKR", "country_code": "SN"}


async def test_the_mother_page_lists_her_children_and_each_child_links_to_its_mother(console: Console) -> None:  # noqa: F811
    status, mother = await console.api(
        "POST", "/mpi/register", {"first_name": "Awa", "last_name": "Diop", "date_of_birth": "1995-04-02", **DKR}, role="registrar"
    )
    assert status == 201, mother
    mother_id = mother["mpi_id"]
    link = [{"mpi_id": mother_id, "relationship": "mother"}]
    status, child = await console.api(
        "POST", "/mpi/register", {"first_name": "Ibou", "last_name": "Diop", "age_months": 14, "related_persons": link, **DKR},
        role="registrar",
    )
    assert status == 201, child
    status, baby = await console.api(
        "POST", "/mpi/register", {"last_name": "Diop", "gender": "F", "age_months": 0, "related_persons": link, **DKR},
        role="registrar",
    )
    assert status == 201, baby
    await console.sign_in()
    status, html = await console.page(f"/console/identities/{mother_id}")
    assert status == 200
    children = html.split("Children and wards", 1)[1].split("</section>", 1)[0]
    assert f'href="/console/identities/{child["mpi_id"]}"' in children and "Ibou Diop" in children
    assert baby["mpi_id"] in children and "(no given name yet)" in children and "(estimated)" in children
    status, html = await console.page(f"/console/identities/{child['mpi_id']}")
    assert status == 200
    family = html.split('class="family"', 1)[1].split("</td>", 1)[0]
    assert f'href="/console/identities/{mother_id}"' in family and "mother" in family
    assert 'class="estimated"' in html
    status, html = await console.page(f"/console/identities/{child['mpi_id']}", headers={"Accept-Language": "fr"})
    assert "mère" in html and "estimée" in html
